"""The one writer of output rasters: written under temporary names, checked, verified, then renamed together.

GeoTIFFs are tiled and DEFLATE-compressed (optionally converted to Cloud-Optimized GeoTIFF at the end); the LCZ
map carries the legend colours as its colour table and the class names as GDAL category names (in the `.aux.xml`
file GDAL keeps beside a GeoTIFF, which QGIS and gdalinfo read).

Failure behaviour (README "Failure behaviour"): files are written as registered temporaries beside their final
names (core.outputs.temporaries) and removed when anything fails. GDAL write errors are detected: GDAL's error state is
checked after every call that writes (core.outputs.write_errors), and every file is read back whole and compared (CRC-32
of every row) with what was written, then fsync'ed, before any rename. So a full disk or a file-size limit ends
in an OutputError, never in a truncated file under an output name.
"""

from __future__ import annotations

import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from ..common.atomic import fsync_file, fsync_folder, replace_file
from .class_stats import write_stats_csv
from ..common.errors import OutputError
from ..common.lcz import CODES, COLORS, hex_to_rgb, label
from .lock import OutputLock
from .plan import OutputPlan
from ..common.signals import critical_section
from ..common.spec import FLOAT_NODATA, LCZ_NODATA  # nodata of the float rasters (HSE, confidence) and of LCZ codes
from .temporaries import AUX_SUFFIX, aux_path, forget_temporary, register_temporary, temporary_name
from .write_errors import WRITE_ERRORS, gdal_error_reset, gdal_failure, space_note

#: Block edge of the tiled GeoTIFFs, in pixels.
BLOCK_SIZE = 256


def lcz_colormap() -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table of the LCZ raster: 0 transparent (nodata), code k -> COLORS[k-1], opaque."""
    table = {LCZ_NODATA: (0, 0, 0, 0)}
    for code, color in zip(CODES, COLORS):
        table[code] = hex_to_rgb(color) + (255,)
    return table


def lcz_category_names() -> list[str]:
    """Category name of every value 0..17: "No data", then label(code) ("1 Compact high-rise" ... "G Water")."""
    return ["No data"] + [label(code) for code in CODES]


def write_category_names(path: Path, names: Sequence[str]) -> None:
    """Add GDAL category names to band 1 of `path` through its PAM sidecar (GeoTIFF has no tag for them)."""
    items = "\n".join(f"      <Category>{escape(n)}</Category>" for n in names)
    aux_path(path).write_text(
        "<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <CategoryNames>\n"
        f"{items}\n    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n",
        encoding="utf-8",
    )


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
        gdal_error_reset()
        try:
            with rasterio.Env():
                yield
                # Read before leaving the environment: leaving a nested rasterio environment resets GDAL's
                # error state.
                failure = gdal_failure()
        except WRITE_ERRORS as exc:
            raise self._write_error(kind, path, what, str(exc).strip().splitlines()[0] if str(exc).strip()
                                    else type(exc).__name__) from None
        if failure is not None:
            raise self._write_error(kind, path, what, failure)

    def _write_error(self, kind: str, path: Path, what: str, reason: str) -> OutputError:
        final = dict(self.plan.items()).get(kind, path)
        return OutputError(
            f"Writing the {kind} output '{final}' failed while {what}: {reason.rstrip('.')}{space_note(path)}. "
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

    def commit(self, stats_rows: Optional[list[dict]] = None) -> None:
        """Finish every file, verify it, and rename it to its final name.

        Before the first rename, every raster is read back whole and compared with what was written, and every
        file is fsync'ed; any failure raises OutputError with nothing renamed. The renames themselves are not
        interrupted by a stop signal (see defer_signal)."""
        self._write_pending()
        self._close_all(check=True)
        finals = self._finish_rasters()
        if self.plan.stats is not None:
            finals.append((self._write_stats(stats_rows), self.plan.stats))
        self._fsync_all(finals)
        done = ", ".join(str(final) for _, final in finals)
        with critical_section(f"{done} were written."):
            for tmp, final in finals:
                # A stale sidecar of the file we replace would describe the wrong raster: replace_file removes it.
                replace_file(tmp, final, (AUX_SUFFIX,))
            self._committed = True
            for tmp in self._temps:
                forget_temporary(tmp)
            for folder in {final.parent for _, final in finals}:
                fsync_folder(folder)

    def _finish_rasters(self) -> list[tuple[Path, Path]]:
        """(temporary, final) of every raster, converted to COG if asked, verified, the LCZ legend written."""
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
                    write_category_names(tmp, lcz_category_names())
                except OSError as exc:
                    raise self._write_error(kind, aux_path(tmp), "writing the legend (.aux.xml)",
                                            exc.strerror or str(exc)) from None
            finals.append((tmp, final))
        return finals

    def _write_stats(self, stats_rows: Optional[list[dict]]) -> Path:
        """The statistics CSV, written to a temporary file (returned)."""
        tmp = self._new_temporary(self.plan.stats)
        try:
            write_stats_csv(tmp, stats_rows or [])
        except OSError as exc:
            raise self._write_error("stats", tmp, "writing the statistics", exc.strerror or str(exc)) from None
        return tmp

    def _fsync_all(self, finals: list[tuple[Path, Path]]) -> None:
        """Flush every temporary file (and its sidecar) to disk; OutputError naming the output that failed."""
        for tmp, final in finals:
            for path in (tmp, aux_path(tmp)):
                if path.exists():
                    try:
                        fsync_file(path)
                    except OSError as exc:
                        kind = next(k for k, p in self.plan.items() if p == final)
                        raise self._write_error(kind, path, "flushing the file to disk",
                                                exc.strerror or str(exc)) from None

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
            for path in (tmp, aux_path(tmp)):
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
                except OSError:
                    pass
            forget_temporary(tmp)

