"""The tile loop of a mapping run: tiles are read, run through the network batch by batch, and their outputs
added, weighted, into a buffer of the 20 m rows in progress (StripAccumulator); every row that no later tile
touches is finished (normalised, masked, averaged to 100 m) and written at once, so peak memory depends on the
scene's width and the tile size, never on its height. No TensorFlow here: the network comes as a callable.
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional, Sequence

import numpy as np

from ..common.errors import Cancelled, UrbanMTLError
from ..outputs import ClassStats, OutputSet
from ..inputs.scene import Scene
from ..common.spec import CELL, FLOAT_NODATA, NUM_CLASSES, OUTPUT_FACTOR, VALID_SHARE
from ..tiling import Tile, TileLayout, batched

#: Columns of 20 m pixels finished at once (a multiple of CELL): bounds the temporaries of the 17-class maps.
FLUSH_COLUMNS = 1280


class StripAccumulator:
    """Weighted sums of tile outputs over the 20 m rows in progress, finished and written row block by row block.

    Rows [top, top + used) of the scene's 20 m grid are buffered: the weight sum, the weighted HSE sum, the
    weighted LCZ probability sums (17) and, on the 10 m grid, which input pixels are valid. finish(until)
    turns rows [top, until) into output rows and drops them from the buffer. `until` is a multiple of CELL (or
    the grid's end), so every 100 m cell is finished whole.

    The buffers are allocated once, as deep as the deepest span of rows in progress (they grow during the
    first tile rows, then never again): rows still in progress move to the front when finished rows leave.
    Reallocating them per tile row instead fragments the heap, and the process's memory then grows with
    the scene (measured: +190 MB at 10980 px).
    """

    def __init__(self, layout: TileLayout, outputs: Optional[OutputSet], pixel_area_m2: float,
                 stats: Optional[ClassStats] = None) -> None:
        self.layout = layout
        self.h10, self.w10 = layout.height, layout.width
        self.h20, self.w20 = layout.output_height, layout.output_width
        self.w100 = math.ceil(self.w20 / CELL)
        self.outputs = outputs
        self.pixel_area_m2 = pixel_area_m2
        self.stats = stats
        self.top = 0
        self.used = 0            # buffered rows holding sums: [top, top + used)
        self.valid_pixels = 0
        self.peak_rows = 0
        self._alloc(0)

    def _alloc(self, rows: int) -> None:
        self.wsum = np.zeros((rows, self.w20), np.float32)
        self.hsum = np.zeros((rows, self.w20), np.float32)
        self.lsum = np.zeros((rows, self.w20, NUM_CLASSES), np.float32)
        self.valid10 = np.zeros((OUTPUT_FACTOR * rows, OUTPUT_FACTOR * self.w20), bool)

    def _ensure(self, bottom: int) -> None:
        """Make the buffer reach 20 m row `bottom` (exclusive), growing its capacity if it is too shallow."""
        rows = bottom - self.top
        self.peak_rows = max(self.peak_rows, rows)
        have = self.wsum.shape[0]
        if rows > have:
            old = (self.wsum, self.hsum, self.lsum, self.valid10)
            self._alloc(rows)
            self.wsum[:have], self.hsum[:have], self.lsum[:have] = old[0], old[1], old[2]
            self.valid10[:OUTPUT_FACTOR * have] = old[3]
        self.used = max(self.used, rows)

    def add(self, tile: Tile, hse: np.ndarray, lcz: np.ndarray, valid: np.ndarray) -> None:
        """Add one tile's outputs: hse (th/2, tw/2), lcz (th/2, tw/2, 17), input validity (th, tw)."""
        w = self.layout.weights
        r20, c20 = tile.row // OUTPUT_FACTOR, tile.col // OUTPUT_FACTOR
        a, b = max(r20, 0), min(r20 + w.shape[0], self.h20)
        ca, cb = max(c20, 0), min(c20 + w.shape[1], self.w20)
        if b <= a or cb <= ca:
            return
        if a < self.top:
            raise RuntimeError("tile added above rows already written; tiles must come in layout order")
        self._ensure(b)
        ws = w[a - r20:b - r20, ca - c20:cb - c20]
        rows = slice(a - self.top, b - self.top)
        self.wsum[rows, ca:cb] += ws
        self.hsum[rows, ca:cb] += ws * hse[a - r20:b - r20, ca - c20:cb - c20]
        self.lsum[rows, ca:cb] += ws[..., None] * lcz[a - r20:b - r20, ca - c20:cb - c20]
        ra, rb = max(tile.row, 0), min(tile.row + tile.height, self.h10)
        xa, xb = max(tile.col, 0), min(tile.col + tile.width, self.w10)
        top10 = OUTPUT_FACTOR * self.top
        self.valid10[ra - top10:rb - top10, xa:xb] |= valid[ra - tile.row:rb - tile.row, xa - tile.col:xb - tile.col]

    def finishable(self, next_row: Optional[int]) -> int:
        """The 20 m row up to which rows are final once every tile starting above 10 m row next_row is in."""
        if next_row is None:
            return self.h20
        return max(self.top, min(self.h20, (max(next_row, 0) // OUTPUT_FACTOR) // CELL * CELL))

    def finish(self, until: int) -> None:
        """Finish 20 m rows [top, until): write HSE rows, LCZ/confidence rows of their 100 m cells, tally stats."""
        until = min(until, self.h20)
        k = until - self.top
        if k <= 0:
            return
        if until != self.h20 and k % CELL:
            raise RuntimeError("rows are finished in whole 100 m cells")
        self._ensure(until)
        k5 = math.ceil(k / CELL) * CELL
        hse_rows = np.empty((k, self.w20), np.float32)
        codes = np.zeros((k5 // CELL, self.w100), np.uint8)
        conf = np.full((k5 // CELL, self.w100), FLOAT_NODATA, np.float32)
        # In-scene 10 m pixels per 20 m pixel: 2 x 2, less on a partial last row/column.
        g = np.arange(self.top, until)
        row_in = np.clip(self.h10 - OUTPUT_FACTOR * g, 0, OUTPUT_FACTOR)
        for c0 in range(0, self.w20, FLUSH_COLUMNS):
            c1 = min(c0 + FLUSH_COLUMNS, self.w20)
            col_in = np.clip(self.w10 - OUTPUT_FACTOR * np.arange(c0, c1), 0, OUTPUT_FACTOR)
            in2 = row_in[:, None] * col_in[None, :]
            v10 = self.valid10[:OUTPUT_FACTOR * k, OUTPUT_FACTOR * c0:OUTPUT_FACTOR * c1]
            count2 = v10.reshape(k, OUTPUT_FACTOR, c1 - c0, OUTPUT_FACTOR).sum(axis=(1, 3))
            wsum = self.wsum[:k, c0:c1]
            valid20 = (count2 >= VALID_SHARE * in2) & (count2 > 0) & (wsum > 0)
            safe = np.where(wsum > 0, wsum, 1.0).astype(np.float32)
            hse = np.where(valid20, self.hsum[:k, c0:c1] / safe, FLOAT_NODATA).astype(np.float32)
            hse_rows[:, c0:c1] = hse
            probs = self.lsum[:k, c0:c1] / safe[..., None]
            probs *= valid20[..., None]
            cells = _cell_sums(probs, k5)                                        # (k5/5, n, 17)
            n20 = _cell_sums(valid20.astype(np.int32), k5)
            c10 = _cell_sums(count2.astype(np.int32), k5)
            i10 = _cell_sums(in2.astype(np.int32), k5)
            cell_valid = (c10 >= VALID_SHARE * i10) & (n20 > 0)
            mean = cells / np.maximum(n20, 1)[..., None]
            best = np.argmax(mean, axis=-1)
            cc0, cc1 = c0 // CELL, c0 // CELL + cells.shape[1]
            codes[:, cc0:cc1] = np.where(cell_valid, best + 1, 0)
            conf[:, cc0:cc1] = np.where(cell_valid, np.max(mean, axis=-1), FLOAT_NODATA)
            if self.stats is not None:
                hse_sum = _cell_sums(np.where(valid20, hse, 0.0), k5)
                self.stats.add(codes[:, cc0:cc1], i10 * self.pixel_area_m2, hse_sum, np.where(cell_valid, n20, 0),
                               at=(self.top // CELL, cc0))
            self.valid_pixels += int(count2.sum())
        if self.outputs is not None:
            self.outputs.write("hse", self.top, hse_rows)
            self.outputs.write("lcz", self.top // CELL, codes)
            self.outputs.write("confidence", self.top // CELL, conf)
        self._drop(k)
        self.top = until

    def _drop(self, k: int) -> None:
        """Forget the first k buffered 20 m rows: the rows still in use move to the front, the rows they
        leave behind are zeroed, and no memory is allocated or freed."""
        used, keep, f = self.used, max(self.used - k, 0), OUTPUT_FACTOR
        for sums in (self.wsum, self.hsum, self.lsum):
            if keep:
                sums[:keep] = sums[k:k + keep]
            sums[keep:used] = 0
        if keep:
            self.valid10[:f * keep] = self.valid10[f * k:f * (k + keep)]
        self.valid10[f * keep:f * used] = False
        self.used = keep


def _cell_sums(values: np.ndarray, rows: int) -> np.ndarray:
    """Sums over 5 x 5 blocks of 20 m pixels: (k, n[, C]) -> (rows/5, ceil(n/5)[, C]), zero-padded to rows."""
    k, n = values.shape[:2]
    n5 = math.ceil(n / CELL) * CELL
    if (k, n) != (rows, n5):
        pad = [(0, rows - k), (0, n5 - n)] + [(0, 0)] * (values.ndim - 2)
        values = np.pad(values, pad)
    shape = (rows // CELL, CELL, n5 // CELL, CELL) + values.shape[2:]
    return values.reshape(shape).sum(axis=(1, 3))


def _read_batch(scene: Scene, tiles: Sequence[Tile]) -> tuple[list[Tile], np.ndarray, list[np.ndarray], list[Tile]]:
    """Read a batch of tiles. Returns the tiles worth running (some valid pixel inside the scene), their
    stacked reflectance (B, th, tw, 10), their validity masks, and the tiles skipped as wholly nodata."""
    keep, images, masks, skipped = [], [], [], []
    for t in tiles:
        image, valid = scene.read(t.row, t.col, t.height, t.width)
        ra, rb = max(0, -t.row), min(t.height, scene.height - t.row)
        ca, cb = max(0, -t.col), min(t.width, scene.width - t.col)
        if valid[ra:rb, ca:cb].any():
            keep.append(t)
            images.append(image)
            masks.append(valid)
        else:
            skipped.append(t)
    if len(images) == 1:
        batch = images[0][np.newaxis]          # the default batch of one tile: no copy
    else:
        batch = np.stack(images) if images else np.zeros((0,), np.float32)
    return keep, batch, masks, skipped


def _accumulate(accumulator: StripAccumulator, keep: list[Tile], outputs: tuple[np.ndarray, np.ndarray],
                masks: list[np.ndarray], next_row: Optional[int]) -> None:
    """Add one batch's outputs to the accumulator and finish the rows it completed (the writer thread's job)."""
    hse, lcz = outputs
    for j, tile in enumerate(keep):
        # A batch may straddle two tile rows: finish what the first row completed before the second is
        # added, so the buffer never spans more than one tile row and a step.
        accumulator.finish(accumulator.finishable(tile.row))
        accumulator.add(tile, hse[j], lcz[j], masks[j])
    accumulator.finish(accumulator.finishable(next_row))


def run_tiles(scene: Scene, layout: TileLayout, runner: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
              accumulator: StripAccumulator, batch_size: int,
              progress: Optional[Callable[[float], None]] = None,
              is_cancelled: Optional[Callable[[], bool]] = None) -> int:
    """Stream every tile of `layout` through `runner` into `accumulator`, finishing rows as soon as they are
    final. Three stages overlap: a reader thread reads the next batch and a writer thread blends and writes
    the last one while the network runs on this one (each stage in order, one batch ahead or behind at most).
    Returns the number of tiles run (tiles with no valid input pixel are skipped). Raises Cancelled when
    is_cancelled() is true before a batch; an error of the reader or the writer is raised as it happened."""
    groups = batched(layout.tiles, batch_size)
    total = len(layout.tiles)
    done = ran = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="urbanmtl-read") as reader, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="urbanmtl-write") as writer:
        pending: Future = reader.submit(_read_batch, scene, groups[0])
        written: Optional[Future] = None
        try:
            for i, group in enumerate(groups):
                if is_cancelled is not None and is_cancelled():
                    raise Cancelled()
                keep, batch, masks, _ = pending.result()
                if i + 1 < len(groups):
                    pending = reader.submit(_read_batch, scene, groups[i + 1])
                next_row = groups[i + 1][0].row if i + 1 < len(groups) else None
                outputs = runner(batch) if keep else (None, None)
                if written is not None:
                    written.result()              # the writer's last batch is in (and its error raised)
                written = writer.submit(_accumulate, accumulator, keep, outputs, masks, next_row)
                ran += len(keep)
                done += len(group)
                if progress is not None:
                    progress(100.0 * done / total)
            if written is not None:
                written.result()
        finally:
            pending.cancel()
    return ran
