"""Output files of a prediction: checked before any work, written under temporary names, renamed at the end.

GeoTIFFs are tiled and DEFLATE-compressed (optionally converted to Cloud-Optimized GeoTIFF at the end); the LCZ
map carries the legend colours as its colour table and the class names as GDAL category names (in the
`.aux.xml` file GDAL keeps beside a GeoTIFF, which QGIS and gdalinfo read). A failed or cancelled run removes
its temporary files, so no half-written file ever appears under a final name.
"""

from __future__ import annotations

import csv
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window
from xml.sax.saxutils import escape

from .errors import UrbanMTLError
from .lcz import CODES, COLORS, LETTERS, NAMES, NUM_CLASSES, hex_to_rgb, label

#: Nodata of the float rasters (HSE density, LCZ confidence): outside the valid range 0..1.
FLOAT_NODATA = -1.0
#: Nodata of the LCZ code raster; codes are 1..17.
LCZ_NODATA = 0
#: Block edge of the tiled GeoTIFFs, in pixels.
BLOCK_SIZE = 256
RASTER_SUFFIXES = (".tif", ".tiff")
STATS_FIELDS = ("code", "letter", "name", "cells", "area_km2", "mean_hse")


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
    """The final paths of one prediction's outputs (None: not requested)."""

    hse: Path
    lcz: Path
    confidence: Optional[Path] = None
    stats: Optional[Path] = None

    def items(self) -> list[tuple[str, Path]]:
        named = [("hse", self.hse), ("lcz", self.lcz), ("confidence", self.confidence), ("stats", self.stats)]
        return [(k, p) for k, p in named if p is not None]


def plan_outputs(hse_path: str, lcz_path: str, confidence_path: Optional[str] = None,
                 stats_path: Optional[str] = None, *, overwrite: bool = False,
                 inputs: Sequence[str] = ()) -> OutputPlan:
    """Check every output before any work starts; raise UrbanMTLError naming the first problem.

    Checks: a path is given for HSE and LCZ; raster outputs end in .tif/.tiff and the statistics in .csv; no
    two outputs share a path and none is an input; an existing file is only replaced with overwrite=True; the
    folder exists (or can be created) and can be written.
    """
    if not hse_path or not lcz_path:
        raise UrbanMTLError("Both an HSE output and an LCZ output path are needed (e.g. --hse hse.tif --lcz lcz.tif).")
    plan = OutputPlan(
        hse=Path(hse_path).expanduser(), lcz=Path(lcz_path).expanduser(),
        confidence=Path(confidence_path).expanduser() if confidence_path else None,
        stats=Path(stats_path).expanduser() if stats_path else None,
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


def temporary_name(final: Path) -> Path:
    """A hidden name beside `final` for writing it: '.<name>.<random>.tmp<suffix>' in the same folder, so the
    rename at the end is atomic (same filesystem)."""
    return final.with_name(f".{final.stem}.{secrets.token_hex(4)}.tmp{final.suffix}")


@dataclass
class GridSpec:
    """Size and georeferencing of an output grid."""

    height: int
    width: int
    transform: Any
    crs: Any


class OutputSet:
    """The rasters (and CSV) of one prediction, written to temporary files and committed together.

    Use as a context manager: leaving it with an exception removes every temporary file; commit() renames
    them to their final names (replacing old files, which plan_outputs allowed) and converts to COG if asked.
    """

    def __init__(self, plan: OutputPlan, grid20: GridSpec, grid100: GridSpec, *, cog: bool = False,
                 tags: Optional[dict[str, str]] = None) -> None:
        self.plan = plan
        self.cog = cog
        self._tags = dict(tags or {})
        self._temps: list[Path] = []           # every temporary file made, removed unless committed
        self._raster_tmp: dict[str, Path] = {}
        self._datasets: dict[str, Any] = {}
        self._pending: dict[str, tuple[int, list[np.ndarray]]] = {}   # rows not yet handed to GDAL
        self._grid20, self._grid100 = grid20, grid100
        self._committed = False

    def __enter__(self) -> "OutputSet":
        for kind, final in self.plan.items():
            if kind == "stats":
                continue
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = temporary_name(final)
            self._temps.append(tmp)
            self._raster_tmp[kind] = tmp
            self._datasets[kind] = self._open(kind, tmp)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close_all()
        if not self._committed:
            self._remove_temps()

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
        flushed to disk at once. GDAL would otherwise keep every block written in its cache until the file is
        closed (the whole HSE map: 120 MB for a Sentinel-2 tile), and a tile written in parts would be
        compressed and stored more than once.
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
        """Hand rows to GDAL and, with flush, write them to the file (closing and reopening is rasterio's flush)."""
        ds = self._datasets[kind]
        ds.write(values[np.newaxis], window=Window(0, row, values.shape[1], values.shape[0]))
        if flush:
            ds.close()
            self._datasets[kind] = rasterio.open(self._raster_tmp[kind], "r+")

    def _write_pending(self) -> None:
        """Hand GDAL the rows still held (the last, partial block row); closing the files writes them."""
        for kind, (start, rows) in self._pending.items():
            if rows and not self._datasets[kind].closed:
                self._write_rows(kind, start, np.concatenate(rows), flush=False)
        self._pending.clear()

    def has(self, kind: str) -> bool:
        return kind in self._datasets or (kind == "stats" and self.plan.stats is not None)

    def commit(self, stats_rows: Optional[list[dict]] = None) -> None:
        """Finish every file and rename it to its final name."""
        self._write_pending()
        self._close_all()
        finals: list[tuple[Path, Path]] = []
        for kind, final in self.plan.items():
            if kind == "stats":
                continue
            tmp = self._raster_tmp[kind]
            if self.cog:
                tmp = self._to_cog(kind, tmp)
            if kind == "lcz":
                _write_category_names(tmp, lcz_category_names())
            finals.append((tmp, final))
        if self.plan.stats is not None:
            tmp = temporary_name(self.plan.stats)
            self._temps.append(tmp)
            write_stats_csv(tmp, stats_rows or [])
            finals.append((tmp, self.plan.stats))
        for tmp, final in finals:
            os.replace(tmp, final)
            aux_tmp, aux_final = _aux(tmp), _aux(final)
            if aux_tmp.exists():
                os.replace(aux_tmp, aux_final)
            elif aux_final.exists():
                # A stale sidecar of the file we replaced would describe the wrong raster.
                os.remove(aux_final)
        self._committed = True

    def _to_cog(self, kind: str, tmp: Path) -> Path:
        cog = tmp.with_name(tmp.stem + ".cog" + tmp.suffix)
        self._temps.append(cog)
        resampling = "MODE" if kind == "lcz" else "AVERAGE"
        rasterio.shutil.copy(str(tmp), str(cog), driver="COG", compress="DEFLATE",
                             predictor="YES", blocksize=BLOCK_SIZE, resampling=resampling, bigtiff="IF_SAFER")
        os.remove(tmp)
        return cog

    def _close_all(self) -> None:
        for ds in self._datasets.values():
            if not ds.closed:
                ds.close()

    def _remove_temps(self) -> None:
        for tmp in self._temps:
            for path in (tmp, _aux(tmp)):
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass


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
