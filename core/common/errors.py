"""The exceptions that carry a user-facing message (and the one that carries a stop signal)."""

from __future__ import annotations

import signal


class UrbanMTLError(Exception):
    """A problem the user can fix: the message says what is wrong, with which input, and what to do.

    CLIs print it without a traceback and exit with status 2; the QGIS algorithm raises it as a
    QgsProcessingException.
    """


class InputError(UrbanMTLError):
    """The input cannot be mapped: unreadable, damaged, incomplete, or holding values that are not Sentinel-2
    DN or reflectance (core.inputs.checks)."""


class OutputError(UrbanMTLError):
    """An output cannot be written: writing it failed (disk full, file-size limit, I/O error), it would replace a
    file the input reads, or another run is writing it. No file is left under the output names."""


class Cancelled(UrbanMTLError):
    """The run was stopped by the caller's is_cancelled() (between two batches); every temporary file has been
    removed."""

    def __init__(self, message: str = "Cancelled by the user; no output was written.") -> None:
        super().__init__(message)


class MissingPackage(UrbanMTLError):
    """A Python package the run needs is not installed (`module`, its import name): the QGIS engine process reports
    it as kind "missing", which the plugin turns into the sentence naming urbanmtl:install_engine."""

    def __init__(self, module: str, message: str) -> None:
        super().__init__(message)
        self.module = module


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop (SIGINT, SIGTERM, SIGHUP): raised by the CLI's signal handler, so the stack
    unwinds and every temporary file is removed on the way out. A KeyboardInterrupt, so code that already handles
    Ctrl-C handles it alike, and `except Exception` does not swallow it."""

    def __init__(self, signum: int = signal.SIGINT, message: str = "") -> None:
        self.signum = int(signum)
        try:
            self.signal_name = signal.Signals(self.signum).name
        except ValueError:
            self.signal_name = f"signal {self.signum}"
        super().__init__(message or f"interrupted ({self.signal_name}); no output was written.")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process stopped by a signal: 128 + its number (130 for Ctrl-C)."""
        return 128 + self.signum
