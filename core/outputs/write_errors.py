"""Detecting and explaining failed writes: GDAL's error state, the file-size limit, a full disk.

GDAL reports failures of flushing and closing only in its error state, not by raising: the writer resets it
before and reads it after every call that writes (gdal_error_reset, gdal_failure).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import re
from pathlib import Path
from typing import Any, Optional

from rasterio.errors import RasterioIOError

try:
    from rasterio._err import CPLE_BaseError as _CPLE_BaseError
except ImportError:  # pragma: no cover - other rasterio versions
    _CPLE_BaseError = RasterioIOError

#: Exceptions a failed write raises.
WRITE_ERRORS = (RasterioIOError, _CPLE_BaseError, OSError)

_gdal_lib_cache: list[Any] = []


def _gdal_lib():
    """ctypes handle on the libgdal rasterio uses (already loaded in this process), or None."""
    if not _gdal_lib_cache:
        lib = None
        try:
            names = []
            if os.path.exists("/proc/self/maps"):       # Linux: the very libgdal rasterio loaded
                try:
                    with open("/proc/self/maps") as fh:
                        names = sorted({line.split()[-1] for line in fh
                                        if re.search(r"/libgdal[^/]*\.so", line)})
                except OSError:
                    pass
            if not names:
                found = ctypes.util.find_library("gdal")
                names = [found] if found else []
            for name in names:
                try:
                    candidate = ctypes.CDLL(name)
                    candidate.CPLGetLastErrorType.restype = ctypes.c_int
                    candidate.CPLGetLastErrorMsg.restype = ctypes.c_char_p
                    candidate.CPLErrorReset.restype = None
                    lib = candidate
                    break
                except (OSError, AttributeError):
                    continue
        except Exception:  # pragma: no cover - never let this check itself fail a run
            lib = None
        _gdal_lib_cache.append(lib)
    return _gdal_lib_cache[0]


def gdal_error_reset() -> None:
    lib = _gdal_lib()
    if lib is not None:
        lib.CPLErrorReset()


def gdal_failure() -> Optional[str]:
    """GDAL's last error in this thread when it is a failure (CE_Failure or CE_Fatal), else None."""
    lib = _gdal_lib()
    if lib is None:
        return None
    if lib.CPLGetLastErrorType() >= 3:
        msg = lib.CPLGetLastErrorMsg()
        return (msg or b"GDAL reported a failure").decode("utf-8", errors="replace")
    return None


def space_note(path: Path) -> str:
    """Why a write may have failed: the file-size limit of this process, or a full disk."""
    notes = []
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            size = path.stat().st_size if path.exists() else 0
            notes.append(f"{'the file reached' if size >= soft else 'files may not grow beyond'} this "
                         f"process's file-size limit of {soft} bytes ('ulimit -f')")
    except (ImportError, OSError, ValueError):
        pass
    try:
        usage = shutil.disk_usage(path.parent if str(path.parent) else ".")
        if usage.free < 64 * 2 ** 20 or usage.free < 0.01 * usage.total:
            notes.append(f"the disk holding '{path.parent}' is full ({usage.free / 2 ** 20:.1f} MB free)")
    except OSError:
        pass
    return f" ({'; '.join(notes)})" if notes else ""

