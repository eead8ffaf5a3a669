"""One runner for the command lines that train (core.train, core.finetune): stop signals, exit statuses and the one
`error:` sentence, stated once. (core.predict and core.batch keep their own handlers, which also defer a stop while
outputs are renamed; they use the same exit statuses.)

Exit statuses, as every command's --help says: 0 done; 1 the run failed (a bug: URBANMTL_DEBUG=1 shows the
traceback); 2 bad input or arguments, said in one sentence; 130 stopped by Ctrl-C (SIGINT); 143 stopped by SIGTERM
(128 + the signal's number; SIGHUP, where there is one, 129).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from typing import Callable

from .errors import Interrupted, UrbanMTLError

EXIT_OK, EXIT_FAILED, EXIT_INPUT = 0, 1, 2
#: The exit statuses, for every command's --help (argparse epilog).
EXIT_HELP = ("Exit status: 0 done; 1 the run failed (a bug: URBANMTL_DEBUG=1 shows the traceback); 2 bad input or "
             "arguments (one 'error:' sentence says which and what to do); 130 stopped by Ctrl-C, 143 by SIGTERM.")
#: The signals that stop a command cleanly (SIGHUP where the platform has it).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


#: The stop signal received during the current command (None: none). Raised inside a library (Keras calling a layer,
#: TensorFlow's data pipeline), the stop may come out as another exception: it is still reported as the stop.
_received: list[int] = []


def _raise_interrupted(signum, frame) -> None:     # noqa: ARG001 (signal handler signature)
    _received.append(signum)
    raise Interrupted(signum)


def run_command(job: Callable[[], int], stopped: str = "nothing half-written was left") -> int:
    """Run `job()` (returning an exit status) with the stop signals raising Interrupted; a stop, an UrbanMTLError or
    a bug ends in one 'error:' line on stderr and its exit status. `stopped` says what a stop leaves (e.g. what
    --resume needs)."""
    previous = {}
    _received.clear()
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            try:
                previous[signum] = signal.signal(signum, _raise_interrupted)
            except (ValueError, OSError):  # pragma: no cover
                pass
    try:
        return job()
    except KeyboardInterrupt as exc:
        return _stopped(exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT), stopped)
    except Exception as exc:
        if _received:                  # the stop, re-raised by a library as its own error
            return _stopped(Interrupted(_received[0]), stopped)
        return _failed(exc)
    finally:
        for signum, handler in previous.items():
            try:
                signal.signal(signum, handler)
            except (ValueError, OSError, TypeError):  # pragma: no cover
                pass


def _stopped(stop: Interrupted, stopped: str) -> int:
    ignore_stops()
    print(f"error: stopped by {stop.signal_name}; {stopped}.", file=sys.stderr, flush=True)
    return stop.exit_code


def _failed(exc: Exception) -> int:
    """The exit status and one sentence of a run that raised `exc` (not a stop)."""
    if isinstance(exc, UrbanMTLError):
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_INPUT
    if os.environ.get("URBANMTL_DEBUG"):
        traceback.print_exception(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(f"error: unexpected {type(exc).__name__}: {text}. This is a bug: run again with URBANMTL_DEBUG=1 to see "
          f"where it happened, and report it.", file=sys.stderr, flush=True)
    return EXIT_FAILED


def ignore_stops() -> None:
    """A second Ctrl-C while the first one's clean-up ends must not interrupt it."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            try:
                signal.signal(signum, signal.SIG_IGN)
            except (ValueError, OSError):  # pragma: no cover
                pass
