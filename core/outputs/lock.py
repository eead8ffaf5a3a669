"""Locking the names of a run's outputs, so that two runs never write the same files at the same time.

OutputLock takes a lock file (core.common.locks: fcntl on POSIX, msvcrt on Windows) beside every output name
(`.<name>.urbanmtl-lock`) for the whole run: a
second run writing the same names is refused while the first runs, and the lock files go when the run ends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..common.errors import OutputError
from ..common.locks import locking_available, try_lock
from .plan import OutputPlan
from ..common.spec import LOCK_SUFFIX
from .temporaries import remove_stale_temporaries



class OutputLock:
    """Exclusive locks on the names of a plan's outputs, for one run (a context manager).

    A lock file `.<name>.urbanmtl-lock` beside every output (its folder is created if needed) is locked
    (core.common.locks.try_lock): a second run (another process, or another thread of this one) that wants any of the names
    gets an OutputError at once. Under the lock, an output that appeared since plan_outputs is refused again
    (without overwrite), and the temporaries a killed run left for these names are removed (stale_removed).
    On release the lock files are removed, and so are the folders the lock created, unless an OutputSet has
    started writing there (keep_folders).
    """

    def __init__(self, plan: OutputPlan) -> None:
        self.plan = plan
        self.stale_removed: list[Path] = []
        self.notes: list[str] = []
        self._held: list[tuple[Path, int]] = []
        self._made_dirs: list[Path] = []
        self.acquired = False

    @staticmethod
    def lock_path(final: Path) -> Path:
        folder = final.parent if str(final.parent) else Path(".")
        return folder.resolve() / f".{final.name}{LOCK_SUFFIX}"

    def acquire(self) -> "OutputLock":
        if self.acquired:
            return self
        try:
            for kind, final in self.plan.items():
                self._make_folder(final.parent if str(final.parent) else Path("."))
                fd = self._lock(self.lock_path(final), final)
                if fd is not None:
                    self._held.append((self.lock_path(final), fd))
            if not self.plan.overwrite:
                for kind, final in self.plan.items():
                    if final.exists():
                        raise OutputError(
                            f"The {kind} output '{final}' already exists (it appeared after the run started). "
                            f"Choose another name, delete it, or allow overwriting (--overwrite)."
                        )
            for _, final in self.plan.items():
                self.stale_removed += remove_stale_temporaries(final)
        except BaseException:
            self.release()
            raise
        self.acquired = True
        return self

    def release(self) -> None:
        held, self._held = self._held, []
        for path, fd in reversed(held):
            if os.name == "nt":       # Windows removes no open file: close (unlock), then remove
                _close(fd)
            try:
                os.remove(path)       # on POSIX while still locked: whoever opens it next makes a new one
            except OSError:
                pass
            if os.name != "nt":
                _close(fd)
        made, self._made_dirs = self._made_dirs, []
        for folder in reversed(made):
            try:
                os.rmdir(folder)      # only if the run left it empty (it failed before writing anything)
            except OSError:
                pass
        self.acquired = False

    def keep_folders(self) -> None:
        """Leave the folders made for the outputs in place on release (writing has started in them)."""
        self._made_dirs = []

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()

    def _make_folder(self, folder: Path) -> None:
        missing = []
        probe = folder
        while not probe.exists() and probe.parent != probe:
            missing.append(probe)
            probe = probe.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"The output folder '{folder}' cannot be created ({exc.strerror}). Choose a folder "
                              f"you can write to.") from None
        self._made_dirs += list(reversed(missing))

    def _lock(self, path: Path, final: Path) -> Optional[int]:
        if not locking_available():  # pragma: no cover
            return None
        for _ in range(10):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise OutputError(f"The lock file '{path}' for the output '{final}' cannot be made "
                                  f"({exc.strerror}). Choose a folder you can write to.") from None
            try:
                taken = try_lock(fd)
            except OSError as exc:  # a filesystem without locks: go on unlocked, and say so
                os.close(fd)
                self.notes.append(f"The output '{final}' could not be locked ({exc.strerror}); runs writing the "
                                  f"same names at the same time are not detected there.")
                return None
            if not taken:
                os.close(fd)
                owner = _lock_owner(path)
                raise OutputError(
                    f"Another urbanmtl run{owner} is writing '{final}' right now (lock file '{path}'). Wait for "
                    f"it to finish, or choose other output names."
                )
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:   # the previous holder removed the file between our open and our lock: try again
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError:
                pass
            return fd
        raise OutputError(f"The output '{final}' could not be locked (its lock file '{path}' keeps changing). "
                          f"Another run is starting on the same names; try again.")


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _lock_owner(path: Path) -> str:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return ""
    return f" (process {pid})" if pid != os.getpid() else " in this process"
