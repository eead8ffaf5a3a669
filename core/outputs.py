"""Output files of a prediction: checked before any work, locked, written under temporary names, verified, renamed.

The one writer of output rasters. GeoTIFFs are tiled and DEFLATE-compressed (optionally converted to
Cloud-Optimized GeoTIFF at the end); the LCZ map carries the legend colours as its colour table and the class
names as GDAL category names (in the `.aux.xml` file GDAL keeps beside a GeoTIFF, which QGIS and gdalinfo read).

Failure behaviour (README "Failure behaviour"):
- No output may be a file the input reads (check_outputs_apart; the input's files come from core.raster).
- OutputLock takes an fcntl lock file beside every output name (`.<name>.urbanmtl-lock`) for the whole run: a
  second run writing the same names is refused while the first runs, and the lock files go when the run ends.
- Files are written as hidden temporaries beside their final names (`.<stem>.<random>.tmp<suffix>`), listed in a
  process-wide registry (remove_temporaries, for signal handlers) and removed when anything fails; temporaries
  that a killed run left behind are removed by the next run that takes the lock on the same names.
- GDAL write errors are detected: GDAL's error state is checked after every call that writes (GDAL reports
  failures of flushing and closing only that way), and every file is read back whole and compared (CRC-32 of
  every row) with what was written, then fsync'ed, before any rename. So a full disk or a file-size limit ends
  in an OutputError, never in a truncated file under an output name.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import math
import os
import re
import secrets
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from xml.sax.saxutils import escape

from .errors import Interrupted, OutputError, UrbanMTLError
from .lcz import CODES, COLORS, LETTERS, NAMES, NUM_CLASSES, hex_to_rgb, label

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]
try:
    from rasterio._err import CPLE_BaseError as _CPLE_BaseError
except ImportError:  # pragma: no cover - other rasterio versions
    _CPLE_BaseError = RasterioIOError

#: Nodata of the float rasters (HSE density, LCZ confidence): outside the valid range 0..1.
FLOAT_NODATA = -1.0
#: Nodata of the LCZ code raster; codes are 1..17.
LCZ_NODATA = 0
#: Block edge of the tiled GeoTIFFs, in pixels.
BLOCK_SIZE = 256
RASTER_SUFFIXES = (".tif", ".tiff")
STATS_FIELDS = ("code", "letter", "name", "cells", "area_km2", "mean_hse")
#: Name of the lock file beside an output `<name>`: `.<name>` + this.
LOCK_SUFFIX = ".urbanmtl-lock"

_WRITE_ERRORS = (RasterioIOError, _CPLE_BaseError, OSError)


def lcz_colormap() -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table of the LCZ raster: 0 transparent (nodata), code k -> COLORS[k-1], opaque."""
    table = {LCZ_NODATA: (0, 0, 0, 0)}
    for code, color in zip(CODES, COLORS):
        table[code] = hex_to_rgb(color) + (255,)
    return table


def lcz_category_names() -> list[str]:
    """Category name of every value 0..17: "No data", then label(code) ("1 Compact high-rise" ... "G Water")."""
    return ["No data"] + [label(code) for code in CODES]


@dataclass
class OutputPlan:
    """The final paths of one prediction's outputs (None: not requested), and whether existing files may go."""

    hse: Path
    lcz: Path
    confidence: Optional[Path] = None
    stats: Optional[Path] = None
    overwrite: bool = False

    def items(self) -> list[tuple[str, Path]]:
        named = [("hse", self.hse), ("lcz", self.lcz), ("confidence", self.confidence), ("stats", self.stats)]
        return [(k, p) for k, p in named if p is not None]


def plan_outputs(hse_path: str, lcz_path: str, confidence_path: Optional[str] = None,
                 stats_path: Optional[str] = None, *, overwrite: bool = False,
                 inputs: Sequence[str] = ()) -> OutputPlan:
    """Check every output before any work starts; raise UrbanMTLError naming the first problem.

    Checks: a path is given for HSE and LCZ; raster outputs end in .tif/.tiff and the statistics in .csv; no
    two outputs share a path and none is an input; an existing file is only replaced with overwrite=True; the
    folder exists (or can be created) and can be written. `inputs` are the paths as given; once the input is
    open, check_outputs_apart checks against every file it reads (VRT sources, band files of a folder or SAFE).
    """
    if not hse_path or not lcz_path:
        raise UrbanMTLError("Both an HSE output and an LCZ output path are needed (e.g. --hse hse.tif --lcz lcz.tif).")
    plan = OutputPlan(
        hse=Path(hse_path).expanduser(), lcz=Path(lcz_path).expanduser(),
        confidence=Path(confidence_path).expanduser() if confidence_path else None,
        stats=Path(stats_path).expanduser() if stats_path else None,
        overwrite=bool(overwrite),
    )
    seen: dict[Path, str] = {}
    input_paths = {Path(p).expanduser().resolve() for p in inputs}
    for kind, path in plan.items():
        wanted = (".csv",) if kind == "stats" else RASTER_SUFFIXES
        if path.suffix.lower() not in wanted:
            raise UrbanMTLError(
                f"The {kind} output '{path}' must end in {' or '.join(wanted)}. Choose a file name like "
                f"{'lcz_stats.csv' if kind == 'stats' else kind + '.tif'}."
            )
        resolved = path.resolve()
        if resolved in seen:
            raise UrbanMTLError(f"The {kind} and {seen[resolved]} outputs are the same file '{path}'. Give "
                                f"each output its own name.")
        seen[resolved] = kind
        if resolved in input_paths:
            raise UrbanMTLError(f"The {kind} output '{path}' is the input raster. Write the outputs elsewhere.")
        if path.is_dir():
            raise UrbanMTLError(f"The {kind} output '{path}' is a folder. Give a file name inside it.")
        if path.exists() and not overwrite:
            raise UrbanMTLError(
                f"The {kind} output '{path}' already exists. Choose another name, delete it, or allow "
                f"overwriting (--overwrite)."
            )
        _check_writable_folder(path, kind)
    return plan


def check_outputs_apart(plan: OutputPlan, input_files: Sequence[str]) -> None:
    """Raise OutputError when an output would replace a file the input reads (a VRT's source, a band file of a
    folder or SAFE product, the target of a symbolic link, the same file under another path)."""
    real = {os.path.realpath(p): p for p in input_files}
    ids: dict[tuple[int, int], str] = {}
    for p in input_files:
        try:
            st = os.stat(p)
            ids[(st.st_dev, st.st_ino)] = p
        except OSError:
            pass
    for kind, path in plan.items():
        hit = real.get(os.path.realpath(path))
        if hit is None:
            try:
                st = os.stat(path)
                hit = ids.get((st.st_dev, st.st_ino))
            except OSError:
                pass
        if hit is not None:
            raise OutputError(
                f"The {kind} output '{path}' is '{hit}', a file the input reads. An output may never replace a "
                f"file of the input (nor a source of a VRT, a band file of a folder or SAFE product, or the "
                f"target of a link to one). Write the outputs to other names or another folder."
            )


def _check_writable_folder(path: Path, kind: str) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UrbanMTLError(
            f"The {kind} output '{path}' cannot be created: '{probe}' is a file, not a folder. Choose another "
            f"output folder."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UrbanMTLError(
            f"The folder '{probe}' cannot be written (no permission or read-only), so the {kind} output "
            f"'{path}' cannot be saved. Choose a folder you can write to."
        )
    if probe == folder:
        # os.access trusts permission bits; a read-only mount or a full quota only shows when writing.
        name = folder / f".urbanmtl-probe-{secrets.token_hex(4)}"
        try:
            with open(name, "wb"):
                pass
            os.remove(name)
        except OSError as exc:
            raise UrbanMTLError(
                f"The folder '{folder}' cannot be written ({exc.strerror}), so the {kind} output '{path}' "
                f"cannot be saved. Choose a folder you can write to."
            ) from None


# --- temporary files: names, the process-wide registry, leftovers of killed runs ---


def temporary_name(final: Path) -> Path:
    """A hidden name beside `final` for writing it: '.<name>.<random>.tmp<suffix>' in the same folder, so the
    rename at the end is atomic (same filesystem)."""
    return final.with_name(f".{final.stem}.{secrets.token_hex(4)}.tmp{final.suffix}")


def _temporary_pattern(final: Path) -> re.Pattern:
    """Every name temporary_name(final) and the writer derive from it: the file, its COG copy, their .aux.xml."""
    return re.compile(rf"^\.{re.escape(final.stem)}\.[0-9a-f]{{8}}\.tmp(?:\.cog)?{re.escape(final.suffix)}"
                      rf"(?:\.aux\.xml)?$")


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
        for path in (tmp, _aux(tmp)):
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
    pattern = _temporary_pattern(final)
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


# --- signals: renaming the outputs is not interrupted half-way ---


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
def _critical_section(done_message: str = "") -> Iterator[None]:
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
    return _critical_section()


# --- locking the output names ---


class OutputLock:
    """Exclusive locks on the names of a plan's outputs, for one run (a context manager).

    A lock file `.<name>.urbanmtl-lock` beside every output (its folder is created if needed) is locked with
    fcntl.flock: a second run (another process, or another thread of this one) that wants any of the names
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
            try:
                os.remove(path)       # while still locked: whoever opens it next makes a new one
            except OSError:
                pass
            try:
                os.close(fd)
            except OSError:
                pass
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
        if fcntl is None:  # pragma: no cover
            return None
        for _ in range(10):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise OutputError(f"The lock file '{path}' for the output '{final}' cannot be made "
                                  f"({exc.strerror}). Choose a folder you can write to.") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = _lock_owner(path)
                raise OutputError(
                    f"Another urbanmtl run{owner} is writing '{final}' right now (lock file '{path}'). Wait for "
                    f"it to finish, or choose other output names."
                ) from None
            except OSError as exc:  # a filesystem without locks: go on unlocked, and say so
                os.close(fd)
                self.notes.append(f"The output '{final}' could not be locked ({exc.strerror}); runs writing the "
                                  f"same names at the same time are not detected there.")
                return None
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


def _lock_owner(path: Path) -> str:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return ""
    return f" (process {pid})" if pid != os.getpid() else " in this process"


# --- GDAL's error state: failures GDAL reports without raising (flushing, closing) ---


_gdal_lib_cache: list[Any] = []


def _gdal_lib():
    """ctypes handle on the libgdal rasterio uses (already loaded in this process), or None."""
    if not _gdal_lib_cache:
        lib = None
        try:
            names = []
            try:
                with open("/proc/self/maps") as fh:
                    names = sorted({line.split()[-1] for line in fh if re.search(r"/libgdal[^/]*\.so", line)})
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


def _gdal_error_reset() -> None:
    lib = _gdal_lib()
    if lib is not None:
        lib.CPLErrorReset()


def _gdal_failure() -> Optional[str]:
    """GDAL's last error in this thread when it is a failure (CE_Failure or CE_Fatal), else None."""
    lib = _gdal_lib()
    if lib is None:
        return None
    if lib.CPLGetLastErrorType() >= 3:
        msg = lib.CPLGetLastErrorMsg()
        return (msg or b"GDAL reported a failure").decode("utf-8", errors="replace")
    return None


def _space_note(path: Path) -> str:
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
        st = os.statvfs(path.parent if str(path.parent) else ".")
        free = st.f_bavail * st.f_frsize
        if free < 64 * 2 ** 20 or free < 0.01 * st.f_blocks * st.f_frsize:
            notes.append(f"the disk holding '{path.parent}' is full ({free / 2 ** 20:.1f} MB free)")
    except (OSError, AttributeError):
        pass
    return f" ({'; '.join(notes)})" if notes else ""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class GridSpec:
    """Size and georeferencing of an output grid."""

    height: int
    width: int
    transform: Any
    crs: Any


class OutputSet:
    """The rasters (and CSV) of one prediction, written to temporary files and committed together.

    Use as a context manager: leaving it with an exception removes every temporary file; commit() verifies every
    file and renames them to their final names (replacing old files, which plan_outputs allowed), converting to
    COG if asked. `lock`: the OutputLock the caller holds on the plan's names; without one, the set takes its
    own for its lifetime. Every failure to write raises OutputError (the disk is full, a file-size limit, an I/O
    error), and no file then appears under an output name.
    """

    def __init__(self, plan: OutputPlan, grid20: GridSpec, grid100: GridSpec, *, cog: bool = False,
                 tags: Optional[dict[str, str]] = None, lock: Optional[OutputLock] = None) -> None:
        self.plan = plan
        self.cog = cog
        self._tags = dict(tags or {})
        self._temps: list[Path] = []           # every temporary file made, removed unless committed
        self._raster_tmp: dict[str, Path] = {}
        self._datasets: dict[str, Any] = {}
        self._pending: dict[str, tuple[int, list[np.ndarray]]] = {}   # rows not yet handed to GDAL
        self._crc: dict[str, int] = {}         # CRC-32 of every row handed to GDAL, in order
        self._first_row: dict[str, int] = {}
        self._rows: dict[str, int] = {}
        self._grid20, self._grid100 = grid20, grid100
        self._committed = False
        self._lock = lock
        self._own_lock: Optional[OutputLock] = None

    @property
    def stale_removed(self) -> list[Path]:
        lock = self._lock or self._own_lock
        return list(lock.stale_removed) if lock is not None else []

    def __enter__(self) -> "OutputSet":
        try:
            if self._lock is None or not self._lock.acquired:
                self._own_lock = OutputLock(self.plan).acquire()
            (self._own_lock or self._lock).keep_folders()
            for kind, final in self.plan.items():
                if kind == "stats":
                    continue
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = self._new_temporary(final)
                self._raster_tmp[kind] = tmp
                self._datasets[kind] = self._open(kind, tmp)
                self._crc[kind] = 0
                self._rows[kind] = 0
        except BaseException:
            self._abort()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._abort()

    def _abort(self) -> None:
        """Close everything and, unless committed, remove every temporary; release a lock of our own."""
        try:
            self._close_all(check=False)
            if not self._committed:
                self._remove_temps()
        finally:
            if self._own_lock is not None:
                self._own_lock.release()
                self._own_lock = None

    def _new_temporary(self, final: Path) -> Path:
        tmp = temporary_name(final)
        register_temporary(tmp)
        self._temps.append(tmp)
        return tmp

    @contextmanager
    def _gdal(self, kind: str, path: Path, what: str) -> Iterator[None]:
        """Run GDAL calls that write `path`; raise OutputError on an exception or on a failure GDAL only logged.
        Inside a rasterio environment, so GDAL's messages go to rasterio's logger, not to stderr."""
        _gdal_error_reset()
        try:
            with rasterio.Env():
                yield
                # Read before leaving the environment: leaving a nested rasterio environment resets GDAL's
                # error state.
                failure = _gdal_failure()
        except _WRITE_ERRORS as exc:
            raise self._write_error(kind, path, what, str(exc).strip().splitlines()[0] if str(exc).strip()
                                    else type(exc).__name__) from None
        if failure is not None:
            raise self._write_error(kind, path, what, failure)

    def _write_error(self, kind: str, path: Path, what: str, reason: str) -> OutputError:
        final = dict(self.plan.items()).get(kind, path)
        return OutputError(
            f"Writing the {kind} output '{final}' failed while {what}: {reason.rstrip('.')}{_space_note(path)}. "
            f"No file was written under the output names and the temporary files were removed. Free some disk "
            f"space (or raise the file-size limit), or write the outputs to another folder."
        )

    def _open(self, kind: str, path: Path):
        grid = self._grid20 if kind == "hse" else self._grid100
        dtype = "uint8" if kind == "lcz" else "float32"
        profile = dict(
            driver="GTiff", width=grid.width, height=grid.height, count=1, dtype=dtype, crs=grid.crs,
            transform=grid.transform, nodata=LCZ_NODATA if kind == "lcz" else FLOAT_NODATA,
            tiled=True, blockxsize=BLOCK_SIZE, blockysize=BLOCK_SIZE, compress="deflate",
            predictor=2 if kind == "lcz" else 3, bigtiff="IF_SAFER",
            # Blocks are flushed row by row (see write): without SPARSE_OK each flush would first store every
            # block not yet written as an empty one, to be stored again when its rows come.
            sparse_ok=True,
        )
        with self._gdal(kind, path, "creating the file"):
            ds = rasterio.open(path, "w", **profile)
            ds.update_tags(**self._tags)
            if kind == "hse":
                ds.set_band_description(1, "HSE density (built-up fraction 0..1, 20 m)")
                ds.update_tags(1, UNITS="fraction", VALID_RANGE="0 1")
            elif kind == "lcz":
                ds.set_band_description(1, "LCZ (1..17 = LCZ 1..10, A..G; 0 = no data)")
                ds.write_colormap(1, lcz_colormap())
                ds.update_tags(1, **{f"LCZ_{code}": label(code) for code in CODES})
            else:
                ds.set_band_description(1, "LCZ confidence (probability of the winning class, 100 m)")
        return ds

    def write(self, kind: str, row: int, values: np.ndarray) -> None:
        """Write rows [row, row + len(values)) of a raster output (full width); rows come top to bottom.

        Rows are held here until they fill whole rows of BLOCK_SIZE-high tiles, which then go to GDAL and are
        flushed to disk at once (a full disk shows at once: GDAL's error state is checked). GDAL would otherwise
        keep every block written in its cache until the file is closed (the whole HSE map: 120 MB for a
        Sentinel-2 tile), and a tile written in parts would be compressed and stored more than once.
        """
        if kind not in self._datasets:
            return
        start, rows = self._pending.get(kind, (row, []))
        if row != start + sum(len(r) for r in rows):
            raise RuntimeError(f"{kind} rows must be written in order: got row {row}")
        rows.append(values)
        held = sum(len(r) for r in rows)
        ready = (start + held) // BLOCK_SIZE * BLOCK_SIZE - start
        if ready <= 0:
            self._pending[kind] = (start, rows)
            return
        block = np.concatenate(rows)
        self._write_rows(kind, start, block[:ready])
        self._pending[kind] = (start + ready, [block[ready:]] if ready < held else [])

    def _write_rows(self, kind: str, row: int, values: np.ndarray, flush: bool = True) -> None:
        """Hand rows to GDAL and, with flush, write them to the file (closing and reopening is rasterio's flush);
        OutputError when GDAL fails or reports a failure."""
        ds = self._datasets[kind]
        path = self._raster_tmp[kind]
        values = np.ascontiguousarray(values, dtype=ds.dtypes[0])
        if self._rows[kind] == 0:
            self._first_row[kind] = row
        with self._gdal(kind, path, f"writing rows {row}..{row + len(values) - 1}"):
            ds.write(values[np.newaxis], window=Window(0, row, values.shape[1], values.shape[0]))
        self._crc[kind] = zlib.crc32(values, self._crc[kind])
        self._rows[kind] += values.shape[0]
        if flush:
            with self._gdal(kind, path, f"storing rows {row}..{row + len(values) - 1}"):
                ds.close()
            with self._gdal(kind, path, "reopening the file"):
                self._datasets[kind] = rasterio.open(path, "r+")

    def _write_pending(self) -> None:
        """Hand GDAL the rows still held (the last, partial block row); closing the files writes them."""
        for kind, (start, rows) in self._pending.items():
            if rows and not self._datasets[kind].closed:
                self._write_rows(kind, start, np.concatenate(rows), flush=False)
        self._pending.clear()

    def has(self, kind: str) -> bool:
        return kind in self._datasets or (kind == "stats" and self.plan.stats is not None)

    def commit(self, stats_rows: Optional[list[dict]] = None) -> None:
        """Finish every file, verify it, and rename it to its final name.

        Before the first rename, every raster is read back whole and compared with what was written, and every
        file is fsync'ed; any failure raises OutputError with nothing renamed. The renames themselves are not
        interrupted by a stop signal (see defer_signal)."""
        self._write_pending()
        self._close_all(check=True)
        finals: list[tuple[Path, Path]] = []
        for kind, final in self.plan.items():
            if kind == "stats":
                continue
            tmp = self._raster_tmp[kind]
            if self.cog:
                tmp = self._to_cog(kind, tmp)
            self._verify(kind, tmp)
            if kind == "lcz":
                try:
                    _write_category_names(tmp, lcz_category_names())
                except OSError as exc:
                    raise self._write_error(kind, _aux(tmp), "writing the legend (.aux.xml)",
                                            exc.strerror or str(exc)) from None
            finals.append((tmp, final))
        if self.plan.stats is not None:
            tmp = self._new_temporary(self.plan.stats)
            try:
                write_stats_csv(tmp, stats_rows or [])
            except OSError as exc:
                raise self._write_error("stats", tmp, "writing the statistics", exc.strerror or str(exc)) from None
            finals.append((tmp, self.plan.stats))
        for tmp, final in finals:
            for path in (tmp, _aux(tmp)):
                if path.exists():
                    try:
                        _fsync(path)
                    except OSError as exc:
                        kind = next(k for k, p in self.plan.items() if p == final)
                        raise self._write_error(kind, path, "flushing the file to disk",
                                                exc.strerror or str(exc)) from None
        done = ", ".join(str(final) for _, final in finals)
        with _critical_section(f"{done} were written."):
            for tmp, final in finals:
                os.replace(tmp, final)
                aux_tmp, aux_final = _aux(tmp), _aux(final)
                if aux_tmp.exists():
                    os.replace(aux_tmp, aux_final)
                elif aux_final.exists():
                    # A stale sidecar of the file we replaced would describe the wrong raster.
                    os.remove(aux_final)
            self._committed = True
            for tmp in self._temps:
                forget_temporary(tmp)
            for folder in {final.parent for _, final in finals}:
                _fsync_folder(folder)

    def _verify(self, kind: str, path: Path) -> None:
        """Read the finished file back whole and compare it (CRC-32) with every row written."""
        grid = self._grid20 if kind == "hse" else self._grid100
        first, count = self._first_row.get(kind, 0), self._rows[kind]
        crc = 0
        with self._gdal(kind, path, "verifying the finished file"):
            with rasterio.open(path) as ds:
                shape = (ds.height, ds.width)
                if shape == (grid.height, grid.width):
                    for r in range(first, first + count, BLOCK_SIZE):
                        n = min(BLOCK_SIZE, first + count - r)
                        crc = zlib.crc32(np.ascontiguousarray(ds.read(1, window=Window(0, r, ds.width, n))), crc)
        if shape != (grid.height, grid.width):
            raise self._write_error(kind, path, "verifying the finished file",
                                    f"it has {shape[1]} x {shape[0]} pixels, not {grid.width} x {grid.height}")
        if crc != self._crc[kind]:
            raise self._write_error(kind, path, "verifying the finished file",
                                    "the file on disk differs from what was written")

    def _to_cog(self, kind: str, tmp: Path) -> Path:
        cog = tmp.with_name(tmp.stem + ".cog" + tmp.suffix)
        register_temporary(cog)
        self._temps.append(cog)
        resampling = "MODE" if kind == "lcz" else "AVERAGE"
        with self._gdal(kind, cog, "converting to Cloud-Optimized GeoTIFF"):
            rasterio.shutil.copy(str(tmp), str(cog), driver="COG", compress="DEFLATE",
                                 predictor="YES", blocksize=BLOCK_SIZE, resampling=resampling, bigtiff="IF_SAFER")
        os.remove(tmp)
        return cog

    def _close_all(self, check: bool = False) -> None:
        for kind, ds in self._datasets.items():
            if ds.closed:
                continue
            if check:
                with self._gdal(kind, self._raster_tmp[kind], "finishing the file"):
                    ds.close()
            else:
                try:
                    with rasterio.Env():
                        ds.close()
                except Exception:
                    pass

    def _remove_temps(self) -> None:
        for tmp in self._temps:
            for path in (tmp, _aux(tmp)):
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
                except OSError:
                    pass
            forget_temporary(tmp)


def _fsync_folder(folder: Path) -> None:
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


def _aux(path: Path) -> Path:
    return path.with_name(path.name + ".aux.xml")


def _write_category_names(path: Path, names: Sequence[str]) -> None:
    """Add GDAL category names to band 1 of `path` through its PAM sidecar (GeoTIFF has no tag for them)."""
    items = "\n".join(f"      <Category>{escape(n)}</Category>" for n in names)
    _aux(path).write_text(
        "<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <CategoryNames>\n"
        f"{items}\n    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n",
        encoding="utf-8",
    )


@dataclass
class ClassStats:
    """Running per-class totals over the finished 100 m cells."""

    cells: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, dtype=np.int64))
    area_m2: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, dtype=np.float64))
    hse_sum: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, dtype=np.float64))
    hse_count: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, dtype=np.int64))

    def add(self, codes: np.ndarray, area_m2: np.ndarray, hse_sum: np.ndarray, hse_count: np.ndarray) -> None:
        """codes (h, w) uint8 0..17 of finished cells; per cell: in-scene area (m2), sum and count of the
        valid 20 m HSE values inside it. Code 0 (nodata) is tallied in slot 0 and not reported."""
        flat = codes.ravel().astype(np.int64)
        n = NUM_CLASSES + 1
        self.cells += np.bincount(flat, minlength=n)
        self.area_m2 += np.bincount(flat, weights=area_m2.ravel(), minlength=n)
        self.hse_sum += np.bincount(flat, weights=hse_sum.ravel(), minlength=n)
        self.hse_count += np.bincount(flat, weights=hse_count.ravel(), minlength=n).astype(np.int64)

    def rows(self) -> list[dict]:
        """One dict per LCZ class (all 17, in code order): code, letter, name, cells, area_km2 (the cells'
        area inside the scene), mean_hse (mean of the valid 20 m HSE values in the class's cells; None if
        the class has no cell)."""
        out = []
        for code in CODES:
            count = int(self.hse_count[code])
            out.append({
                "code": code, "letter": LETTERS[code - 1], "name": NAMES[code - 1],
                "cells": int(self.cells[code]), "area_km2": float(self.area_m2[code]) / 1e6,
                "mean_hse": float(self.hse_sum[code]) / count if count else None,
            })
        return out


def write_stats_csv(path: Path, rows: Sequence[dict]) -> None:
    """CSV with the columns STATS_FIELDS; area_km2 to 4 decimals (1 m2 = 1e-6 km2), mean_hse to 4, empty = none."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(STATS_FIELDS))
        writer.writeheader()
        for row in rows:
            mean = row["mean_hse"]
            writer.writerow({
                **{k: row[k] for k in ("code", "letter", "name", "cells")},
                "area_km2": f"{row['area_km2']:.4f}",
                "mean_hse": "" if mean is None or (isinstance(mean, float) and math.isnan(mean)) else f"{mean:.4f}",
            })
