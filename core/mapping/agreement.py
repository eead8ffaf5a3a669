"""Whether two runs gave the same maps (two runtimes, two tilings, a product and its bands): the share of 100 m cells
with the same LCZ and the largest HSE difference, against the rule the engine holds itself to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from ..common.spec import FLOAT_NODATA, LCZ_NODATA

#: Two maps are the same when at least this share of the LCZ cells (valid in either) agree ...
SAME_LCZ_SHARE = 0.999
#: ... and HSE differs by at most this anywhere both are valid.
SAME_HSE = 0.001


@dataclass(frozen=True)
class Agreement:
    lcz_share: float       # share of the cells valid in either map with the same LCZ code
    hse_max: float         # largest |HSE a - HSE b| over the pixels valid in both
    cells: int

    @property
    def same(self) -> bool:
        return self.lcz_share >= SAME_LCZ_SHARE and self.hse_max <= SAME_HSE

    def describe(self) -> str:
        return f"same LCZ in {100 * self.lcz_share:.3f} % of {self.cells} cells, HSE within {self.hse_max:.2g}"


def _read(path: str | Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def map_agreement(hse_a: str | Path, lcz_a: str | Path, hse_b: str | Path, lcz_b: str | Path) -> Agreement:
    """The agreement of two runs' HSE and LCZ GeoTIFFs on the same grids (a grid of another shape agrees nowhere)."""
    la, lb = _read(lcz_a), _read(lcz_b)
    ha, hb = _read(hse_a), _read(hse_b)
    if la.shape != lb.shape or ha.shape != hb.shape:
        return Agreement(0.0, float("inf"), int(max(la.size, lb.size)))
    cells = (la != LCZ_NODATA) | (lb != LCZ_NODATA)
    share = float((la[cells] == lb[cells]).mean()) if cells.any() else 1.0
    both = (ha != FLOAT_NODATA) & (hb != FLOAT_NODATA)
    nodata_differs = bool(((ha != FLOAT_NODATA) != (hb != FLOAT_NODATA)).any())
    hse = float(np.abs(ha[both] - hb[both]).max()) if both.any() else 0.0
    return Agreement(share, float("inf") if nodata_differs else hse, int(cells.sum()))
