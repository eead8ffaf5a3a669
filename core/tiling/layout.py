"""Tile layouts over a scene and their blending weights: overlapping tiles with smooth weights, or the authors' scheme.

All sizes and positions are in input pixels (10 m), relative to the scene's upper-left pixel. The network halves
the grid once before its HSE output (20 m), so every tile starts on an even row and column: the tile's 20 m
output then falls exactly on the scene's 20 m grid, which shares the scene's upper-left corner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..common.errors import UrbanMTLError
# The contract's numbers (core.common.spec, no TensorFlow): SCHEMES, MIN_TILE_SIZE (two 80 m cells of the LCZ branch),
# OUTPUT_FACTOR (10 m input pixels per 20 m output pixel), the tiling of a model whose card gives none.
from ..common.spec import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, MIN_TILE_SIZE, OUTPUT_FACTOR, SCHEMES, SIZE_MULTIPLE


@dataclass(frozen=True)
class Tile:
    """One network input window: rows [row, row + height) and columns [col, col + width) of the scene.

    row/col may be negative or the window may reach past the scene's last row/column: those pixels are
    filled by the reader (context from outside the scene, or mirrored data), never written to the outputs.
    """

    row: int
    col: int
    height: int
    width: int


@dataclass(frozen=True)
class TileLayout:
    """Every tile of a scene, sorted top-to-bottom then left-to-right, and the weight each output pixel gets.

    `height`, `width`: scene size in 10 m pixels. `weights`: (tile_height/2, tile_width/2) float32 > 0, the
    blending weight of each 20 m output pixel of a tile (the same array for every tile).
    """

    height: int
    width: int
    tile_height: int
    tile_width: int
    overlap: int
    scheme: str
    tiles: tuple[Tile, ...]
    weights: np.ndarray

    @property
    def output_height(self) -> int:
        """Rows of the scene's 20 m grid (a partial last pixel included)."""
        return math.ceil(self.height / OUTPUT_FACTOR)

    @property
    def output_width(self) -> int:
        return math.ceil(self.width / OUTPUT_FACTOR)

    def __len__(self) -> int:
        return len(self.tiles)


#: Tiles of a model whose attention pools over windows (attention_window), in 10 m pixels: large, because the map
#: no longer depends on the tile size, and overlapping by the network's reach (README, "Speed and tiling").
WINDOWED_TILE_SIZE, WINDOWED_OVERLAP = 512, 32


def training_patch(card: dict) -> Optional[int]:
    """The size (10 m pixels) of the windows a model was trained on (its card's training config), or None."""
    config = (card.get("training", {}).get("config", {}) if isinstance(card, dict) else {}) or {}
    patch = config.get("patch_size")
    ok = isinstance(patch, int) and patch >= MIN_TILE_SIZE and patch % SIZE_MULTIPLE == 0
    return patch if ok else None


def attention_window(card: dict) -> Optional[int]:
    """The window (20 m pixels) the network's channel attention pools over when it maps: the card's
    "attention_window", else half its training windows (the 20 m size of what it trained on); None when the card
    says neither or the model has no attention modules (it then pools over each tile, as it trained)."""
    if not isinstance(card, dict):
        return None
    if isinstance(card.get("attention_window"), int):
        return card["attention_window"]
    if (card.get("config") or {}).get("variant") == "mtl_no_cbam":
        return None
    patch = training_patch(card)
    return patch // OUTPUT_FACTOR if patch else None


def model_tiling(card: dict, windowed: bool = True) -> tuple[int, int]:
    """(tile_size, overlap) a model maps with by default.

    With windowed attention (attention_window, the default for a model whose card gives its training windows)
    the map does not depend on the tile size: WINDOWED_TILE_SIZE tiles overlapping by WINDOWED_OVERLAP.
    Without it (windowed False, or a card that does not say), the network's attention pools over its whole input
    and its answers depend on the input's size: tiles as large as its training windows, overlapping by a quarter
    of that on each side (measured for the bundled model v3 on three validation cities: 256 px tiles gave
    built/natural OA 0.840/0.898/0.810, 64 px tiles 0.876/0.926/0.841). A card's `tiling` entry
    ({"tile_size": n, "overlap": m}) takes precedence; a card without either falls back to DEFAULT_TILE_SIZE/
    DEFAULT_OVERLAP (256/32, core.common.spec). A model trained with a label margin (config `label_margin`) overlaps
    its tiles by at least twice that margin."""
    tiling = card.get("tiling") if isinstance(card, dict) else None
    if isinstance(tiling, dict) and "tile_size" in tiling:
        tile = int(tiling["tile_size"])
        return tile, int(tiling.get("overlap", tile // 4))
    patch = training_patch(card)
    margin = ((card.get("training", {}).get("config", {}) or {}).get("label_margin") or 0) if patch else 0
    margin = margin if isinstance(margin, int) and margin > 0 else 0
    if windowed and attention_window(card):
        return WINDOWED_TILE_SIZE, max(WINDOWED_OVERLAP, 2 * margin)
    if patch:
        overlap = patch // 4
        if margin:
            # Trained without a loss on `margin` pixels of each edge: neighbours overlap by twice that, so
            # each tile's edge is weighted down against the centre of the next tile (up to half a tile).
            overlap = min(max(overlap, 2 * margin), patch // 2)
        return patch, overlap // SIZE_MULTIPLE * SIZE_MULTIPLE
    return DEFAULT_TILE_SIZE, DEFAULT_OVERLAP


def check_tiling(tile_size: int, overlap: int, scheme: str = "blend") -> None:
    """Raise UrbanMTLError unless tile_size/overlap/scheme can make a layout.

    tile_size: edge of a square tile in 10 m pixels, a multiple of SIZE_MULTIPLE (8), at least 16.
    overlap: pixels each tile shares with each neighbour, 0 <= overlap <= tile_size / 2 (so one pixel lies in
    at most two tiles along each axis and every step is at least 8 pixels).
    """
    if scheme not in SCHEMES:
        raise UrbanMTLError(f"Unknown tiling scheme '{scheme}'. Choose one of: {', '.join(SCHEMES)}.")
    if not isinstance(tile_size, (int, np.integer)) or tile_size < MIN_TILE_SIZE or tile_size % SIZE_MULTIPLE:
        raise UrbanMTLError(
            f"tile_size must be a multiple of {SIZE_MULTIPLE} pixels and at least {MIN_TILE_SIZE}; got "
            f"{tile_size}. Use e.g. {DEFAULT_TILE_SIZE} (the network pools three times by 2)."
        )
    if not isinstance(overlap, (int, np.integer)) or overlap < 0 or 2 * overlap > tile_size:
        raise UrbanMTLError(
            f"overlap must be between 0 and half the tile size ({tile_size // 2} pixels for tile_size "
            f"{tile_size}); got {overlap}. Use a smaller overlap (e.g. {tile_size // 8}) or larger tiles."
        )


def tile_starts(length: int, tile: int, overlap: int, align: int = SIZE_MULTIPLE) -> list[int]:
    """Start positions of overlapping tiles of `tile` pixels covering [0, length), spaced as evenly as possible.

    Starts are multiples of `align`; neighbours overlap by at least `overlap` pixels; the last tile ends at
    the scene length rounded up to `align` (or at `tile` when the scene is shorter than one tile), so the
    scene's last pixels lie inside a tile, never in a gap.
    """
    if length <= 0:
        raise ValueError("length must be positive")
    padded = max(tile, math.ceil(length / align) * align)
    span_units = (padded - tile) // align          # the last start, in units of `align`
    if span_units == 0:
        return [0]
    max_step_units = max(1, (tile - overlap) // align)
    gaps = math.ceil(span_units / max_step_units)
    # Integer rounding of i * span / gaps: consecutive steps differ by at most one unit and never exceed
    # max_step_units, because span / gaps <= max_step_units and the latter is an integer.
    return [align * ((i * span_units + gaps // 2) // gaps) for i in range(gaps + 1)]


def ramp_profile(n: int, ramp: float) -> np.ndarray:
    """1-D blending profile of length n: a raised-cosine rise over `ramp` samples at both ends, 1 in between.

    Values are in (0, 1]; sample i at distance d = min(i, n-1-i) from the nearer end weighs
    sin^2(pi/2 * min(1, (d + 0.5) / ramp)). Two profiles that overlap by exactly `ramp` samples sum to one.
    ramp <= 0 gives all ones (a hard cut between tiles).
    """
    if ramp <= 0:
        return np.ones(n, dtype=np.float32)
    d = np.minimum(np.arange(n), np.arange(n)[::-1]).astype(np.float64)
    t = np.minimum(1.0, (d + 0.5) / ramp)
    return (np.sin(0.5 * np.pi * t) ** 2).astype(np.float32)


def blend_weights(height: int, width: int, ramp: float) -> np.ndarray:
    """(height, width) float32 weights: outer product of two ramp profiles, > 0 everywhere, 1 in the core."""
    return np.outer(ramp_profile(height, ramp), ramp_profile(width, ramp)).astype(np.float32)


def _effective_tile(length: int, tile_size: int) -> int:
    """The tile edge along one axis: tile_size, or the scene length rounded up to 8 when that is smaller
    (a small scene is one tile without padding it to 256 pixels of mirrored data)."""
    return min(tile_size, max(MIN_TILE_SIZE, math.ceil(length / SIZE_MULTIPLE) * SIZE_MULTIPLE))


def make_layout(height: int, width: int, tile_size: int = DEFAULT_TILE_SIZE, overlap: int = DEFAULT_OVERLAP,
                scheme: str = "blend") -> TileLayout:
    """The tiles that cover a scene of height x width 10 m pixels.

    scheme "blend": overlapping tiles (tile_starts) whose outputs are averaged with raised-cosine weights
    that ramp over `overlap` pixels from each tile edge, so seams fade smoothly and every pixel is covered.
    scheme "authors": the scheme of Qiu et al.'s code: four non-overlapping tile grids shifted along the
    diagonal by 0, s/4, s/2 and 3s/4 (s = tile edge, rounded to even pixels), every tile weighted 1, so each
    pixel is the plain mean of four predictions. Unlike the authors' code, which drops the scene's last
    partial tile row and column, the grids here extend past the scene edges (the reader fills the
    outside), so every pixel gets its four predictions.
    """
    check_tiling(tile_size, overlap, scheme)
    if height <= 0 or width <= 0:
        raise UrbanMTLError(f"The scene to predict is empty ({height} x {width} pixels); choose a larger extent.")
    th, tw = _effective_tile(height, tile_size), _effective_tile(width, tile_size)
    if scheme == "blend":
        rows = tile_starts(height, th, overlap)
        cols = tile_starts(width, tw, overlap)
        tiles = tuple(Tile(r, c, th, tw) for r in rows for c in cols)
        weights = blend_weights(th // OUTPUT_FACTOR, tw // OUTPUT_FACTOR, overlap / OUTPUT_FACTOR)
    else:
        tiles = _authors_tiles(height, width, th, tw)
        weights = np.ones((th // OUTPUT_FACTOR, tw // OUTPUT_FACTOR), dtype=np.float32)
    return TileLayout(height=height, width=width, tile_height=th, tile_width=tw, overlap=overlap,
                      scheme=scheme, tiles=tiles, weights=weights)


def _grid_starts(length: int, tile: int, offset: int) -> list[int]:
    """Starts offset + k * tile (k any integer) of the tiles that intersect [0, length)."""
    first = offset - tile * math.ceil(offset / tile) if offset > 0 else offset
    return list(range(first, length, tile))


def _authors_tiles(height: int, width: int, th: int, tw: int) -> tuple[Tile, ...]:
    tiles: list[Tile] = []
    for k in range(4):
        # Shift k/4 of a tile along the diagonal, rounded to an even pixel so outputs stay on the 20 m grid.
        dr = OUTPUT_FACTOR * round(k * th / 4 / OUTPUT_FACTOR)
        dc = OUTPUT_FACTOR * round(k * tw / 4 / OUTPUT_FACTOR)
        tiles += [Tile(r, c, th, tw) for r in _grid_starts(height, th, dr) for c in _grid_starts(width, tw, dc)]
    return tuple(sorted(tiles, key=lambda t: (t.row, t.col)))


def coverage(layout: TileLayout, weighted: bool = False) -> np.ndarray:
    """(ceil(H/2), ceil(W/2)) float64: how many tiles (or, weighted, the sum of weights) cover each 20 m pixel
    of the scene. Used by tests and diagnostics; the engine accumulates strip by strip instead."""
    out = np.zeros((layout.output_height, layout.output_width), dtype=np.float64)
    w = layout.weights if weighted else np.ones_like(layout.weights)
    for t in layout.tiles:
        _add_clipped(out, w, t.row // OUTPUT_FACTOR, t.col // OUTPUT_FACTOR)
    return out


def _add_clipped(target: np.ndarray, values: np.ndarray, row: int, col: int) -> None:
    """target[row:row+h, col:col+w] += values, with the parts outside target dropped."""
    h, w = values.shape[:2]
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + h, target.shape[0]), min(col + w, target.shape[1])
    if r1 > r0 and c1 > c0:
        target[r0:r1, c0:c1] += values[r0 - row:r1 - row, c0 - col:c1 - col]


def batched(tiles: Sequence[Tile], batch_size: int) -> list[list[Tile]]:
    """Consecutive groups of at most batch_size tiles, in layout order."""
    if batch_size < 1:
        raise UrbanMTLError(f"batch_size must be at least 1; got {batch_size}.")
    return [list(tiles[i:i + batch_size]) for i in range(0, len(tiles), batch_size)]
