"""Replacing files atomically: write a temporary sibling, flush it to disk, rename it over the final name.

A rename within one folder is atomic: readers see the old file or the new one, never half of one, and a run
killed mid-write leaves the previous file in place. `atomic_write` is the helper for one file (and the sidecars
GDAL writes beside it); `replace_file` is the rename itself, for writers that commit several files together
(core.outputs.writer.OutputSet).
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from .locks import replace

PathLike = Union[str, "os.PathLike[str]"]


def sidecar(path: Path, suffix: str) -> Path:
    """The file GDAL keeps beside `path` under `path` + suffix (e.g. '.aux.xml')."""
    return path.with_name(path.name + suffix)


def replace_file(tmp: Path, final: Path, sidecars: Sequence[str] = ()) -> None:
    """Rename `tmp` over `final` (retried while Windows holds it, core.common.locks.replace), then each sidecar of
    tmp (suffixes `sidecars`) over final's. A sidecar that final has and tmp lacks is removed: it would describe the
    file just replaced."""
    replace(tmp, final)
    for suffix in sidecars:
        side_tmp, side_final = sidecar(tmp, suffix), sidecar(final, suffix)
        if side_tmp.exists():
            replace(side_tmp, side_final)
        elif side_final.exists():
            os.remove(side_final)


@contextmanager
def atomic_write(path: PathLike, *, tmp: Optional[PathLike] = None, sidecars: Sequence[str] = (),
                 fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; when the block ends, rename it over `path` (replace_file,
    with its `sidecars`), fsync'ed first with fsync=True. When the block (or the rename) raises, the temporary and
    its sidecars are removed and the exception goes on. tmp: the temporary's name (default
    '.<name>.<8 hex>.tmp' in the same folder)."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if fsync:
            fsync_file(tmp)
        replace_file(tmp, path, sidecars)
    except BaseException:
        for leftover in (tmp, *(sidecar(tmp, s) for s in sidecars)):
            try:
                os.remove(leftover)
            except OSError:
                pass
        raise


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk (OSError when that fails)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Make the renames durable (best effort: not every filesystem can sync a folder)."""
    try:
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
