"""The output folder of a fine-tuning run, for the QGIS engine process and the headless command alike: claimed new or
empty, marked by .urbanmtl-run, which the running process keeps locked (core.common.locks); when the run fails, is
cancelled or is stopped by Ctrl-C, everything it wrote goes (and the folder, when the run made it). A run killed
before it could clean up (SIGKILL, a crash, a power cut) leaves its files and an unlocked marker: the plugin calls
remove_stopped_run() after killing its child, and the next run into the same folder does the same. Standard library
only: the QGIS side uses it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from .errors import UrbanMTLError
from .locks import try_lock

#: The marker of a run in progress (or killed) in its output folder.
MARKER = ".urbanmtl-run"
def _lock(fd: int) -> bool:
    """Try to take the exclusive lock of `fd` (core.common.locks); False when another live process holds it."""
    try:
        return try_lock(fd)
    except OSError:           # a filesystem without locks: the marker alone says a run is there
        return True


def _clear(out: Path, created: bool) -> list[str]:
    """Remove everything in `out` (the run claimed it empty), and `out` itself when the run created it."""
    removed = []
    for entry in sorted(out.iterdir()) if out.is_dir() else ():
        if entry.name == MARKER:
            continue
        try:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry.name)
        except OSError:
            pass
    try:
        (out / MARKER).unlink()
    except OSError:
        pass
    if created:
        try:
            out.rmdir()
        except OSError:
            pass
    return removed


def remove_stopped_run(out: str | os.PathLike) -> Optional[list[str]]:
    """Remove what a stopped (killed) run left in `out`: None when there is no such run (no marker, or the run
    is alive and holds its lock), else the names removed."""
    out = Path(out)
    marker = out / MARKER
    try:
        fd = os.open(marker, os.O_RDWR)
    except OSError:
        return None
    try:
        if not _lock(fd):
            return None          # a live run: its files are not ours
        try:
            created = bool(json.loads(os.read(fd, 4096).decode("utf-8") or "{}").get("created"))
        except ValueError:
            created = False
        return _clear(out, created)
    finally:
        os.close(fd)


class RunFolder:
    """The output folder of one run (a context manager): claims it (new or empty, marker locked), and on the
    way out removes the marker, and with it everything the run wrote when the run failed or was cancelled."""

    def __init__(self, out: str | os.PathLike, log: Any) -> None:
        self.out = Path(out)
        self.log = log
        self.created = False
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunFolder":
        out = self.out
        stale = remove_stopped_run(out)
        if stale is not None:
            self.log(f"Removed what an earlier, stopped run left in {out}: {', '.join(stale) or 'nothing'}.")
        elif (out / MARKER).exists():
            raise UrbanMTLError(f"Another training run is writing to the folder '{out}'. Wait for it to finish or "
                                f"choose another output folder.")
        if out.exists() and not out.is_dir():
            raise UrbanMTLError(f"The output folder '{out}' is a file. Choose a new or empty folder.")
        if out.is_dir():
            entries = sorted(p.name for p in out.iterdir())
            if entries:
                runs = [name for name in ("model.keras", "accuracy.json", "state.json") if name in entries]
                what = (f"already holds a training run ({', '.join(runs)})" if runs
                        else f"is not empty ({', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''})")
                raise UrbanMTLError(f"The output folder '{out}' {what}. Choose a new or empty output folder: a "
                                    f"training run writes model.keras, accuracy.html, maps/ and more into it.")
        else:
            try:
                out.mkdir(parents=True)
            except OSError as exc:
                raise UrbanMTLError(f"Cannot create the output folder '{out}' ({exc.strerror or exc}). Choose a "
                                    f"writable folder.") from None
            self.created = True
        self._fd = os.open(out / MARKER, os.O_RDWR | os.O_CREAT, 0o644)
        _lock(self._fd)
        os.write(self._fd, json.dumps({"created": self.created, "pid": os.getpid()}).encode("utf-8"))
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            _clear(self.out, self.created)
        else:
            (self.out / MARKER).unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
