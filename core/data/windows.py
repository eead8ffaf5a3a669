"""Where a scene's windows lie: its blocks, the evaluation tiles covering them, and random training windows.

The usable scene (rows and columns rounded down to even numbers) is cut into square blocks of 2 x patch_size
pixels (a last strip narrower than patch_size joins its neighbour). Training windows are drawn at random even
offsets entirely inside one block (blocks chosen in proportion to their area), or, when the LCZ reference is
training-area polygons only, around the polygons' centres. Evaluation tiles cover each block with windows of
patch_size, the last one in a row or column aligned with the block's far edge.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..common.errors import UrbanMTLError
from .base import MAX_NODATA_SHARE

Block = tuple[int, int, int, int]  # row0, row1, col0, col1 in 10 m image pixels
Centre = tuple[float, float, int, int]  # row, col (10 m pixels), the index of the block holding it, LCZ code


def block_edges(size: int, block: int, patch: int, axis: str, source: str) -> list[tuple[int, int]]:
    """[start, end) pixel ranges cutting `size` (rounded down to even) into blocks of `block` px.

    A last range narrower than `patch` joins the one before it, so every block fits at least one patch and
    every pixel belongs to a block. Raises UrbanMTLError when the scene is smaller than one patch.
    """
    usable = size - size % 2
    if usable < patch:
        raise UrbanMTLError(
            f"The image of {source} has {size} {axis}, fewer than patch_size {patch}. Use a smaller patch_size "
            f"(a multiple of 8) or a larger scene."
        )
    edges = [(s, min(s + block, usable)) for s in range(0, usable, block)]
    if len(edges) > 1 and edges[-1][1] - edges[-1][0] < patch:
        edges[-2:] = [(edges[-2][0], usable)]
    return edges


def tile_offsets(start: int, end: int, patch: int) -> list[int]:
    """Window starts covering [start, end) with windows of `patch`; the last aligned with `end`."""
    offsets = list(range(start, end - patch + 1, patch))
    if offsets[-1] + patch < end:
        offsets.append(end - patch)
    return offsets


def evaluation_tiles(blocks: Sequence[Block], patch: int) -> list[tuple[int, int]]:
    """(row, col) of the upper-left pixel of every evaluation tile of `blocks`, in evaluation order."""
    out: list[tuple[int, int]] = []
    for r0, r1, c0, c1 in blocks:
        out.extend((r, c) for r in tile_offsets(r0, r1, patch) for c in tile_offsets(c0, c1, patch))
    return out


def polygon_centres(bounds: Sequence[tuple[float, float, float, float]], codes: Sequence[int], transform: Any,
                    blocks: Sequence[Block]) -> list[Centre]:
    """(row, col, block, code) of the centre of every polygon bounding box (x0, y0, x1, y1 in the image CRS)
    that lies inside one of `blocks`, with the polygon's LCZ code; `transform` is the image's pixel-to-CRS
    affine transform."""
    inverse = ~transform
    centres = []
    for (x0, y0, x1, y1), code in zip(bounds, codes):
        col, row = inverse * ((x0 + x1) / 2, (y0 + y1) / 2)
        for b, (r0, r1, c0, c1) in enumerate(blocks):
            if r0 <= row < r1 and c0 <= col < c1:
                centres.append((row, col, b, int(code)))
                break
    return centres


def class_weights(centres: Sequence[Centre], power: float = 1.0) -> np.ndarray:
    """Probabilities of drawing each centre: a class of n polygons is drawn in proportion to n ** (1 - power)
    (power 1: every class equally often; 0: every polygon alike), its polygons alike."""
    codes = np.array([c[3] for c in centres])
    _, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    weights = counts[inverse].astype(np.float64) ** -float(power)
    return weights / weights.sum()


def draw_in_blocks(blocks: Sequence[Block], patch: int, rng: np.random.Generator, count: int
                   ) -> list[tuple[int, int]]:
    """`count` random training windows: a block in proportion to its area, then even offsets inside it."""
    areas = np.array([(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in blocks], dtype=np.float64)
    chosen = rng.choice(len(blocks), size=count, p=areas / areas.sum())
    windows = []
    for b in chosen:
        r0, r1, c0, c1 = blocks[int(b)]
        # Even offsets keep the 20 m HSE grid of the window on the 20 m grid of the scene.
        r = r0 + 2 * int(rng.integers(0, (r1 - r0 - patch) // 2 + 1))
        c = c0 + 2 * int(rng.integers(0, (c1 - c0 - patch) // 2 + 1))
        windows.append((r, c))
    return windows


def draw_around(centres: Sequence[Centre], blocks: Sequence[Block], patch: int, rng: np.random.Generator,
                count: int, weights: Optional[np.ndarray] = None) -> list[tuple[int, int]]:
    """`count` training windows, each around a random polygon centre (shifted at random by up to a quarter
    window), kept inside the polygon's block, at even offsets. `weights`: the probability of each centre
    (None: all alike)."""
    p = patch
    windows = []
    picks = rng.integers(0, len(centres), size=count) if weights is None else rng.choice(len(centres), count, p=weights)
    for k in picks:
        row, col, b, _ = centres[int(k)]
        r0, r1, c0, c1 = blocks[b]
        shift = rng.integers(-p // 4, p // 4 + 1, size=2)
        r = int(min(max(row - p / 2 + shift[0], r0), r1 - p)) // 2 * 2
        c = int(min(max(col - p / 2 + shift[1], c0), c1 - p)) // 2 * 2
        windows.append((max(r, r0 + r0 % 2), max(c, c0 + c0 % 2)))
    return windows


def usability(sample: tuple[np.ndarray, ...], has_hse: bool, has_lcz: bool) -> tuple[int, float]:
    """(1 if usable else 0, share of valid pixels with a reference) of a window sample (image, hse, lcz,
    nodata): usable = at most half nodata and some reference on a valid pixel."""
    _, hse, lcz, nodata = sample
    valid = ~nodata
    with_ref = np.zeros(nodata.shape, dtype=bool)
    if has_lcz:
        with_ref |= lcz.sum(axis=-1) > 0
    if has_hse:
        with_ref |= np.repeat(np.repeat(np.isfinite(hse[..., 0]), 2, axis=0), 2, axis=1)
    share = float((with_ref & valid).mean())
    usable = nodata.mean() <= MAX_NODATA_SHARE and share > 0
    return int(usable), share
