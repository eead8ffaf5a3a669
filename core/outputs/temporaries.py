"""Temporary files of the outputs: their names, the process-wide registry, and the leftovers of killed runs.

Outputs are written as hidden temporaries beside their final names (`.<stem>.<random>.tmp<suffix>`), listed in a
process-wide registry (remove_temporaries, for signal handlers) and removed when anything fails; temporaries that
a killed run left behind are removed by the next run that takes the lock on the same names
(remove_stale_temporaries, called by core.outputs.lock.OutputLock).
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

from ..common.atomic import sidecar
from ..common.locks import try_lock
from ..common.spec import LOCK_SUFFIX, TEMPORARY_HEX_DIGITS, TEMPORARY_MARK, temporary_pattern

#: GDAL's sidecar of a GeoTIFF (the LCZ map's category names live there).
AUX_SUFFIX = ".aux.xml"


def aux_path(path: Path) -> Path:
    """The `.aux.xml` file GDAL keeps beside `path`."""
    return sidecar(path, AUX_SUFFIX)


def temporary_name(final: Path) -> Path:
    """A hidden name beside `final` for writing it: '.<name>.<random>.tmp<suffix>' in the same folder, so the
    rename at the end is atomic (same filesystem)."""
    return final.with_name(f".{final.stem}.{secrets.token_hex(TEMPORARY_HEX_DIGITS // 2)}{TEMPORARY_MARK}"
                           f"{final.suffix}")


_registry_lock = threading.Lock()
_live_temporaries: set[Path] = set()


def register_temporary(path: Path) -> None:
    """Record a temporary file about to be made, so remove_temporaries() can remove it (signal handlers)."""
    with _registry_lock:
        _live_temporaries.add(Path(path))


def forget_temporary(path: Path) -> None:
    with _registry_lock:
        _live_temporaries.discard(Path(path))


def remove_temporaries() -> list[Path]:
    """Remove every temporary file (and GDAL sidecar) this process has registered and not yet renamed or removed.
    The last line of defence of a CLI stopped by a signal (writers remove their own files on the way out)."""
    with _registry_lock:
        paths = sorted(_live_temporaries)
        _live_temporaries.clear()
    removed = []
    for tmp in paths:
        for path in (tmp, aux_path(tmp)):
            try:
                os.remove(path)
                removed.append(path)
            except FileNotFoundError:
                pass
            except OSError:
                pass
    return removed


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove the temporary files of `final` that an earlier run left behind (killed with SIGKILL, a power cut).
    Call it only while holding the OutputLock on `final`: no live run then writes them."""
    folder = final.parent if str(final.parent) else Path(".")
    pattern = temporary_pattern(final)   # every name temporary_name(final) and the writer derive from it
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    with _registry_lock:
        ours = {p.name for p in _live_temporaries if p.parent == folder}
    for name in sorted(names):
        if pattern.match(name) and name not in ours and name.removesuffix(".aux.xml") not in ours:
            try:
                os.remove(folder / name)
                removed.append(folder / name)
            except OSError:
                pass
    return removed


def remove_abandoned(final: Path) -> list[Path]:
    """What a run killed while writing `final` left (its temporaries and its lock file), once no live process holds
    that lock (core.common.locks: the kernel released the killed one's). Nothing is removed while a run holds it."""
    lock = final.with_name(f".{final.name}{LOCK_SUFFIX}")
    if not lock.exists():
        return remove_stale_temporaries(final)
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return []
    try:
        if not try_lock(fd):
            return []                 # a live run writes it
    except OSError:
        pass
    finally:
        os.close(fd)
    removed = remove_stale_temporaries(final)
    try:
        os.remove(lock)
        removed.append(lock)
    except OSError:
        pass
    return removed
