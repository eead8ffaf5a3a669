"""The LCZ Generator's way to map training areas, as the peer of fine-tuning: a random forest on per-cell band
statistics (Demuzere et al. 2021, "LCZ Generator: a web application to create Local Climate Zone maps", Frontiers
in Environmental Science 9; Bechtel et al. 2015 for the WUDAPT protocol it follows).

Features of a 100 m cell (the scene's 100 m grid, the one the network's LCZ map uses): for each of the model's 10
Sentinel-2 bands, read by the engine's reader (core.inputs.scene: band mapping, DN offset and scale), the mean and the
standard deviation of the valid 10 m pixels over the cell itself and over the squares of 3 x 3 and 5 x 5 cells
centred on it (300 m and 500 m): 60 features. The LCZ Generator feeds its forest such per-pixel statistics of its
input layers at 100 m; here they come from the same image the network maps, so the two are compared on equal
input. A cell is valid, and gets a class, when at least half of its 10 m pixels inside the scene are valid (as in
the network's map). Training samples: the cells whose centre lies inside a training polygon (the cells
core.evaluation.accuracy scores), labelled with the polygon's class. scikit-learn's RandomForestClassifier, N_TREES trees,
seeded. The scene is read strip by strip; memory holds the per-cell sums, never the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..common.errors import UrbanMTLError
from ..common.spec import CELL, OUTPUT_FACTOR, VALID_SHARE

#: Neighbourhoods of the features, in cells (1 = the cell itself).
SCALES = (1, 3, 5)
#: Trees of the forest.
N_TREES = 100
#: 10 m pixels per 100 m cell along each axis.
CELL_PX = OUTPUT_FACTOR * CELL
#: Values read per strip of the scene (bounds the reader's temporaries).
STRIP_VALUES = 4_000_000


@dataclass
class CellFeatures:
    """Per-cell features of a scene: `values` (h, w, F) float32, `valid` (h, w) bool, on the 100 m grid
    `transform` (origin = the scene's upper-left corner) in `crs`."""

    values: np.ndarray
    valid: np.ndarray
    transform: Any
    crs: Any

    @property
    def shape(self) -> tuple[int, int]:
        return self.valid.shape


def _box_sum(values: np.ndarray, size: int) -> np.ndarray:
    """Sums over size x size neighbourhoods centred on each cell (h, w[, C]); outside the grid counts 0."""
    if size == 1:
        return values
    r = size // 2
    pad = [(r + 1, r), (r + 1, r)] + [(0, 0)] * (values.ndim - 2)
    c = np.pad(values, pad).cumsum(axis=0).cumsum(axis=1)
    h, w = values.shape[:2]
    return c[size:size + h, size:size + w] - c[:h, size:size + w] - c[size:size + h, :w] + c[:h, :w]


def cell_sums(scene: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sum, sum of squares) of each band's valid reflectance per 100 m cell, (h, w, 10) float64; the number of
    valid 10 m pixels per cell and the number of the cell's pixels inside the scene, (h, w) int64."""
    h10, w10 = scene.height, scene.width
    hc, wc = math.ceil(h10 / CELL_PX), math.ceil(w10 / CELL_PX)
    bands = len(scene.indexes)
    s1 = np.zeros((hc, wc, bands), np.float64)
    s2 = np.zeros((hc, wc, bands), np.float64)
    count = np.zeros((hc, wc), np.int64)
    step = CELL_PX * max(1, STRIP_VALUES // (CELL_PX * max(1, w10 * bands)))
    for row in range(0, h10, step):
        rows = min(step, h10 - row)
        image, valid = scene.read(row, 0, rows, w10)
        k = math.ceil(rows / CELL_PX)
        pad = ((0, k * CELL_PX - rows), (0, wc * CELL_PX - w10))
        image = np.pad(image * valid[..., None], pad + ((0, 0),)).astype(np.float64)
        valid = np.pad(valid, pad)
        blocks = (k, CELL_PX, wc, CELL_PX)
        top = row // CELL_PX
        s1[top:top + k] = image.reshape(blocks + (bands,)).sum(axis=(1, 3))
        s2[top:top + k] = (image ** 2).reshape(blocks + (bands,)).sum(axis=(1, 3))
        count[top:top + k] = valid.reshape(blocks).sum(axis=(1, 3))
    rows_in = np.clip(h10 - CELL_PX * np.arange(hc), 0, CELL_PX)
    cols_in = np.clip(w10 - CELL_PX * np.arange(wc), 0, CELL_PX)
    return s1, s2, count, rows_in[:, None] * cols_in[None, :]


def cell_features(image: Any, bands: Optional[Sequence[str]] = None, offset: Optional[float] = None,
                  scales: Sequence[int] = SCALES) -> CellFeatures:
    """The features of every 100 m cell of `image` (anything core.predict maps; bands/offset as its options)."""
    from ..inputs.scene import open_scene

    with open_scene(image, bands=list(bands) if bands else None, offset=offset) as scene:
        s1, s2, count, inside = cell_sums(scene)
        t = scene.transform
        transform, crs = t * t.scale(CELL_PX, CELL_PX), scene.crs
    features = []
    for size in scales:
        n = _box_sum(count.astype(np.float64), size)[..., None]
        mean = _box_sum(s1, size) / np.maximum(n, 1)
        var = _box_sum(s2, size) / np.maximum(n, 1) - mean ** 2
        features += [mean, np.sqrt(np.maximum(var, 0.0))]
    valid = (count >= VALID_SHARE * inside) & (count > 0)
    return CellFeatures(np.concatenate(features, axis=-1).astype(np.float32), valid, transform, crs)


def polygon_cells(areas: Sequence[Any], features: CellFeatures) -> np.ndarray:
    """(h, w) int32: 1 + the index in `areas` of the polygon holding each cell's centre, 0 for none (polygons in
    the features' CRS; later polygons win where they overlap)."""
    from rasterio.features import rasterize

    if not areas:
        return np.zeros(features.shape, np.int32)
    return rasterize([(a.geometry, i + 1) for i, a in enumerate(areas)], out_shape=features.shape,
                     transform=features.transform, fill=0, dtype="int32", all_touched=False)


def train_forest(features: CellFeatures, areas: Sequence[Any], seed: int = 0, trees: int = N_TREES) -> Any:
    """A random forest fitted to the valid cells whose centre lies inside one of `areas` (class `area.code`)."""
    from sklearn.ensemble import RandomForestClassifier

    ids = polygon_cells(areas, features)
    take = (ids > 0) & features.valid
    if not take.any():
        raise UrbanMTLError(f"No valid 100 m cell has its centre inside one of the {len(areas)} training polygons, "
                            f"so the random forest has nothing to learn from. Draw training areas at least 200 m "
                            f"across.")
    codes = np.array([a.code for a in areas])[ids[take] - 1]
    forest = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=-1)
    return forest.fit(features.values[take], codes)


def predict_codes(forest: Any, features: CellFeatures) -> np.ndarray:
    """(h, w) uint8 LCZ codes 1..17 of the forest for every valid cell, 0 elsewhere."""
    codes = np.zeros(features.shape, np.uint8)
    if features.valid.any():
        codes[features.valid] = forest.predict(features.values[features.valid]).astype(np.uint8)
    return codes


def write_codes(codes: np.ndarray, like: str, path: str) -> str:
    """Write `codes` as an LCZ map with the grid, colours and tags of the LCZ map `like` (same shape)."""
    import rasterio

    with rasterio.open(like) as src:
        if (src.height, src.width) != codes.shape:
            raise ValueError(f"codes {codes.shape} do not fit the grid of {like} ({src.height}, {src.width})")
        profile = src.profile.copy()
        colormap = src.colormap(1)
        tags = src.tags()
    profile.update(driver="GTiff")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes, 1)
        dst.write_colormap(1, colormap)
        dst.update_tags(**{**tags, "URBANMTL_MODEL": "random forest (LCZ Generator features, core.finetuning.forest)"})
    return path
