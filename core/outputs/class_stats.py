"""Per-class statistics of the LCZ map: running totals over the finished 100 m cells, and their CSV."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..common.lcz import CODES, LETTERS, NAMES, NUM_CLASSES

STATS_FIELDS = ("code", "letter", "name", "cells", "area_km2", "mean_hse")


@dataclass
class ClassStats:
    """Running per-class totals over the finished 100 m cells."""

    cells: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, dtype=np.int64))
    area_m2: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, dtype=np.float64))
    hse_sum: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, dtype=np.float64))
    hse_count: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, dtype=np.int64))

    #: Per-cell area, HSE sum and HSE count of the whole 100 m grid, kept when `keep_cells` gives its (rows,
    #: columns): a majority filter changes cells' classes after the map is written, and `recount` then tallies
    #: the filtered map from them.
    keep_cells: Optional[tuple[int, int]] = None

    def __post_init__(self) -> None:
        self._cells: Optional[tuple[np.ndarray, ...]] = None
        if self.keep_cells is not None:
            shape = tuple(int(n) for n in self.keep_cells)
            self._cells = (np.zeros(shape, np.float64), np.zeros(shape, np.float64), np.zeros(shape, np.int64))

    def add(self, codes: np.ndarray, area_m2: np.ndarray, hse_sum: np.ndarray, hse_count: np.ndarray,
            at: tuple[int, int] = (0, 0)) -> None:
        """codes (h, w) uint8 0..17 of finished cells; per cell: in-scene area (m2), sum and count of the
        valid 20 m HSE values inside it. Code 0 (nodata) is tallied in slot 0 and not reported. `at`: the
        (row, column) of codes[0, 0] on the 100 m grid (needed with keep_cells)."""
        flat = codes.ravel().astype(np.int64)
        n = NUM_CLASSES + 1
        self.cells += np.bincount(flat, minlength=n)
        self.area_m2 += np.bincount(flat, weights=area_m2.ravel(), minlength=n)
        self.hse_sum += np.bincount(flat, weights=hse_sum.ravel(), minlength=n)
        self.hse_count += np.bincount(flat, weights=hse_count.ravel(), minlength=n).astype(np.int64)
        if self._cells is not None:
            (r, c), (h, w) = at, codes.shape
            for table, values in zip(self._cells, (area_m2, hse_sum, hse_count)):
                table[r:r + h, c:c + w] = values

    def recount(self, codes: np.ndarray) -> "ClassStats":
        """The statistics of the same cells with the classes `codes` (the whole 100 m grid, e.g. after a
        majority filter), from the per-cell values kept with keep_cells."""
        if self._cells is None or codes.shape != self._cells[0].shape:
            raise ValueError("recount needs keep_cells set to the shape of the codes")
        again = ClassStats()
        again.add(codes, *self._cells)
        return again

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
