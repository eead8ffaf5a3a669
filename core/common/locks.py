"""Advisory file locks that hold on every platform: fcntl.flock on POSIX, msvcrt.locking on Windows (one byte at the
start of the lock file, which the file need not hold). A lock dies with the process that holds it, so a run killed
with SIGKILL or by the task manager never leaves a lock behind, only its (unlocked) lock file. Also the rename that
Windows refuses for a moment while another process (an antivirus, QGIS reading the previous map) holds the file."""

from __future__ import annotations

import errno
import os
import time

try:
    import fcntl
except ImportError:          # Windows
    fcntl = None             # type: ignore[assignment]
try:
    import msvcrt
except ImportError:          # POSIX
    msvcrt = None            # type: ignore[assignment]

#: How long a rename is retried while Windows reports a sharing violation (seconds).
RENAME_PATIENCE = 2.0


def locking_available() -> bool:
    return fcntl is not None or msvcrt is not None


def try_lock(fd: int) -> bool:
    """Take the exclusive lock of the open file `fd` without waiting: True when taken, False when another process
    (or another open file of this one) holds it. OSError for a filesystem that has no locks."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
    if msvcrt is not None:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EDEADLK):
                return False
            raise
    return True                  # no locking on this platform: the caller's marker files alone tell


def unlock(fd: int) -> None:
    """Release the lock of `fd` (closing the file releases it too)."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        elif msvcrt is not None:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    except OSError:
        pass


def replace(source: "os.PathLike[str] | str", target: "os.PathLike[str] | str") -> None:
    """os.replace, retried for up to RENAME_PATIENCE seconds on Windows while the target is held open elsewhere
    (a sharing violation, PermissionError); elsewhere, and after that, the error goes on."""
    deadline = time.monotonic() + RENAME_PATIENCE
    while True:
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if os.name != "nt" or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
