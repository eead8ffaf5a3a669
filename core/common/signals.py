"""Deferring stop signals: renaming the outputs into place, or a call into native code, is not interrupted half-way.

The CLI's signal handler asks defer_signal first: inside a critical section the signal is remembered and raised
as Interrupted when the section ends (core.outputs.writer.OutputSet.commit renames inside one; signals_deferred
wraps a TensorFlow batch).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

from .errors import Interrupted

_critical_depth = 0
_deferred_signal: Optional[int] = None


def defer_signal(signum: int) -> bool:
    """For signal handlers: True (and the signal is remembered) when the outputs are being renamed into place
    right now; the run then stops right after that, with every output complete."""
    global _deferred_signal
    if _critical_depth > 0:
        _deferred_signal = signum
        return True
    return False


@contextmanager
def critical_section(done_message: str = "") -> Iterator[None]:
    """Stop signals that come inside are deferred to its end (see defer_signal), then raised as Interrupted;
    with a done_message, the message says the outputs were complete."""
    global _critical_depth, _deferred_signal
    _critical_depth += 1
    try:
        yield
    finally:
        _critical_depth -= 1
    if _critical_depth == 0 and _deferred_signal is not None:
        signum, _deferred_signal = _deferred_signal, None
        raise Interrupted(signum, f"interrupted after the outputs were complete: {done_message}"
                          if done_message else "")


def signals_deferred():
    """Run a call into native code (a TensorFlow batch) with stop signals deferred to its end. A handler that
    raises while TensorFlow's C++ runs Python code (its nest utilities import modules) does not unwind cleanly:
    TensorFlow turns the exception into a SystemError/AttributeError and prints a traceback. One batch is short,
    so the stop still comes within a fraction of a second."""
    return critical_section()
