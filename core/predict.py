"""Map HSE density (20 m) and LCZ (100 m) over a whole Sentinel-2 scene: tiled, blended, streamed inference + CLI.

The scene is cut into tiles (core.tiling) that are read, batched and run through the network one batch at a
time; tile outputs are added, weighted, into a buffer that spans only the tile rows in progress, and every
20 m row that no later tile touches is finished (normalised, masked, averaged to 100 m) and written at once.
Peak memory therefore depends on the scene's width and the tile size, never on its height.

    python -m core.predict scene.tif --hse hse.tif --lcz lcz.tif [--confidence conf.tif] [--stats stats.csv]
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run as the CLI. Before the imports below load TensorFlow (core.tiling -> core.model -> keras): silence its
    # start-up INFO lines (CPU features, oneDNN) and keep its warnings and errors (TF_ENABLE_ONEDNN_OPTS is left
    # alone: it changes numerics), and let a stop signal while they load end the process with one line
    # instead of an import traceback. main() installs the handlers of the run itself.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import signal as _signal

    def _stopped_while_starting(signum, frame):  # pragma: no cover - exercised through a subprocess
        sys.stderr.write(f"error: interrupted ({_signal.Signals(signum).name}) while starting; no output was "
                         f"written.\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    for _signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(_signum, _stopped_while_starting)

import argparse
import math
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import __version__
from .errors import Interrupted, UrbanMTLError
from .input_checks import check_offset
from .lcz import NUM_CLASSES
from .outputs import (
    FLOAT_NODATA, ClassStats, GridSpec, OutputLock, OutputSet, check_outputs_apart, defer_signal, plan_outputs,
    remove_temporaries, signals_deferred,
)
from .raster import READ_ERRORS, InputSpec, Scene, damaged_input_error, open_scene
from .tiling import OUTPUT_FACTOR, SCHEMES, Tile, TileLayout, batched, check_tiling, make_layout

DEVICES = ("auto", "cpu", "gpu")
#: 20 m pixels per 100 m LCZ cell, per axis.
CELL = 5
#: A 20 m pixel or 100 m cell is valid when at least this share of its 10 m input pixels inside the scene is
#: valid (the rest is nodata). The LCZ probabilities of a cell are averaged over its valid 20 m pixels only.
VALID_SHARE = 0.5
#: Columns of 20 m pixels finished at once (a multiple of CELL): bounds the temporaries of the 17-class maps.
FLUSH_COLUMNS = 1280


@dataclass
class PredictOptions:
    """How to run a prediction. Sizes in 10 m input pixels."""

    bands: Optional[list[str]] = None          # one name per input band, file order
    extent: Optional[tuple[float, float, float, float]] = None   # xmin, ymin, xmax, ymax
    extent_crs: Optional[str] = None           # WKT/EPSG of extent; None = the input's CRS
    tile_size: int = 256                        # pixels at 10 m, multiple of 8
    overlap: int = 32                           # pixels on each side shared with neighbours
    batch_size: int = 4
    device: str = "auto"                       # auto | cpu | gpu
    overwrite: bool = False
    cog: bool = False
    scheme: str = "blend"                      # blend | authors
    offset: Optional[float] = None             # DN offset to use instead of the metadata's (e.g. -1000)


@dataclass
class PredictResult:
    """What a prediction wrote and measured. stats: one dict per LCZ class (see core.outputs.ClassStats.rows)."""

    hse_path: str
    lcz_path: str
    confidence_path: Optional[str]
    stats_path: Optional[str]
    stats: list[dict]
    seconds: float
    warped: bool
    messages: list[str] = field(default_factory=list)


class Cancelled(UrbanMTLError):
    """The run was stopped by the caller's is_cancelled(); every temporary file has been removed."""

    def __init__(self, message: str = "Cancelled by the user; no output was written.") -> None:
        super().__init__(message)


def validate_options(options: PredictOptions) -> None:
    """Raise UrbanMTLError for options no run can use (checked before anything is opened)."""
    check_tiling(options.tile_size, options.overlap, options.scheme)
    if not isinstance(options.batch_size, (int, np.integer)) or options.batch_size < 1:
        raise UrbanMTLError(f"batch_size must be a positive whole number; got {options.batch_size}.")
    if options.device not in DEVICES:
        raise UrbanMTLError(f"Unknown device '{options.device}'. Choose one of: {', '.join(DEVICES)}.")
    if options.extent is not None and len(options.extent) != 4:
        raise UrbanMTLError(f"The extent must be 4 numbers xmin ymin xmax ymax; got {list(options.extent)}.")
    check_offset(options.offset, "The DN offset (--offset)")


def select_device(device: str) -> str:
    """The TensorFlow device to run on: '/GPU:0' when one is visible (auto) or asked for (gpu), else '/CPU:0'.

    device='cpu' hides the GPUs from TensorFlow when it has not touched them yet, and in any case pins the
    network to the CPU. device='gpu' without a visible GPU is an error.
    """
    import tensorflow as tf

    if device == "cpu":
        try:
            tf.config.set_visible_devices([], "GPU")
        except (RuntimeError, ValueError):
            pass  # TensorFlow is initialised already; tf.device below still keeps the work on the CPU
        return "/CPU:0"
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise UrbanMTLError(
            "device 'gpu' was asked for, but TensorFlow sees no GPU (CUDA drivers and a GPU build of "
            "TensorFlow are needed). Use device 'auto' or 'cpu'."
        )
    return "/GPU:0" if gpus else "/CPU:0"


class NetworkRunner:
    """Calls the inference network on batches (B, H, W, 10) float32 -> (hse (B, H/2, W/2), lcz (B, H/2, W/2, 17)).

    The call is traced once by tf.function for any batch and tile size (None dimensions), so the per-batch
    cost is the network's compute, not Keras's eager dispatch of every layer.
    """

    def __init__(self, network: Any, device: str) -> None:
        import tensorflow as tf

        self.device = device
        self._tf = tf
        # autograph=False: the network has no Python control flow to convert, and autograph cannot parse a
        # lambda's source (it warns). Eager calls were 1.6x slower per 256 x 256 batch of 4 on CPU.
        # Making the function flattens its signature in TensorFlow's C++ (see signals_deferred).
        with signals_deferred():
            self._fn = tf.function(
                lambda x: network(x, training=False),
                input_signature=[tf.TensorSpec([None, None, None, 10], tf.float32)],
                autograph=False,
            )

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with signals_deferred(), self._tf.device(self.device):
            out = self._fn(self._tf.constant(batch, dtype=self._tf.float32))
            hse, lcz = np.asarray(out["hse"])[..., 0], np.asarray(out["lcz"])
        return hse, lcz


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
                self.stats.add(codes[:, cc0:cc1], i10 * self.pixel_area_m2, hse_sum, np.where(cell_valid, n20, 0))
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
    batch = np.stack(images) if images else np.zeros((0,), np.float32)
    return keep, batch, masks, skipped


def run_tiles(scene: Scene, layout: TileLayout, runner: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
              accumulator: StripAccumulator, batch_size: int,
              progress: Optional[Callable[[float], None]] = None,
              is_cancelled: Optional[Callable[[], bool]] = None) -> int:
    """Stream every tile of `layout` through `runner` into `accumulator`, finishing rows as soon as they are
    final. The next batch is read in a background thread while the network runs. Returns the number of
    tiles run (tiles with no valid input pixel are skipped). Raises Cancelled when is_cancelled() is true
    before a batch."""
    groups = batched(layout.tiles, batch_size)
    total = len(layout.tiles)
    done = ran = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="urbanmtl-read") as pool:
        pending: Future = pool.submit(_read_batch, scene, groups[0])
        for i, group in enumerate(groups):
            if is_cancelled is not None and is_cancelled():
                pending.cancel()
                raise Cancelled()
            keep, batch, masks, _ = pending.result()
            if i + 1 < len(groups):
                pending = pool.submit(_read_batch, scene, groups[i + 1])
            if keep:
                hse, lcz = runner(batch)
                for j, tile in enumerate(keep):
                    # A batch may straddle two tile rows: finish what the first row completed before the
                    # second is added, so the buffer never spans more than one tile row and a step.
                    accumulator.finish(accumulator.finishable(tile.row))
                    accumulator.add(tile, hse[j], lcz[j], masks[j])
                ran += len(keep)
            done += len(group)
            next_row = groups[i + 1][0].row if i + 1 < len(groups) else None
            accumulator.finish(accumulator.finishable(next_row))
            if progress is not None:
                progress(100.0 * done / total)
    return ran


def _grids(scene: Scene) -> tuple[GridSpec, GridSpec]:
    t = scene.transform
    h20, w20 = math.ceil(scene.height / OUTPUT_FACTOR), math.ceil(scene.width / OUTPUT_FACTOR)
    grid20 = GridSpec(h20, w20, t * t.scale(OUTPUT_FACTOR, OUTPUT_FACTOR), scene.crs)
    f = OUTPUT_FACTOR * CELL
    grid100 = GridSpec(math.ceil(h20 / CELL), math.ceil(w20 / CELL), t * t.scale(f, f), scene.crs)
    return grid20, grid100


def _input_names(source: InputSpec) -> list[str]:
    return [str(source)] if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__") else [str(s) for s in source]


def predict_scene(input_path: InputSpec, hse_path: str, lcz_path: str, *, confidence_path: Optional[str] = None,
                  stats_path: Optional[str] = None, model_path: Optional[str] = None,
                  options: Optional[PredictOptions] = None,
                  progress: Optional[Callable[[float], None]] = None,
                  is_cancelled: Optional[Callable[[], bool]] = None,
                  log: Optional[Callable[[str], None]] = None) -> PredictResult:
    """Predict HSE density and LCZ for a scene and write the outputs.

    input_path: a raster, a SAFE folder/.zip, a folder of band files, a glob pattern, or a list of band files.
    Outputs: hse_path float32 0..1 at 20 m (nodata -1); lcz_path uint8 codes 1..17 at 100 m (0 = nodata,
    colour table and category names); confidence_path float32 winning probability at 100 m (nodata -1);
    stats_path CSV of per-class cells, area and mean HSE. All grids share the scene's upper-left corner;
    a partial last pixel/cell is included. A 20 m pixel or 100 m cell is valid when at least half of its
    10 m input pixels are valid. progress gets percent 0..100; is_cancelled is checked between batches
    (then Cancelled is raised and nothing is written); log gets each message.
    """
    start = time.perf_counter()
    options = options or PredictOptions()
    messages: list[str] = []

    def say(text: str) -> None:
        messages.append(text)
        if log is not None:
            log(text)

    validate_options(options)
    plan = plan_outputs(hse_path, lcz_path, confidence_path, stats_path, overwrite=options.overwrite,
                        inputs=_input_names(input_path))
    # The output names are locked for the whole run: a second run writing any of them is refused at once.
    with OutputLock(plan) as lock, open_scene(
            input_path, bands=options.bands, extent=options.extent, extent_crs=options.extent_crs,
            offset=options.offset) as scene:
        for text in lock.notes + scene.messages:
            say(text)
        if lock.stale_removed:
            say(f"Removed {len(lock.stale_removed)} temporary file(s) that an earlier, stopped run left beside "
                f"the outputs: {', '.join(p.name for p in lock.stale_removed)}.")
        check_outputs_apart(plan, scene.files)
        if not scene.has_valid_pixels():
            raise UrbanMTLError(
                f"The input {scene.name} has no valid pixel in the area to map (every pixel is nodata or 0 in all "
                f"bands). Check the extent, the file's nodata value, or choose another scene."
            )
        device = select_device(options.device)
        with signals_deferred():             # Keras builds the network through TensorFlow's C++
            loaded = _load(model_path, device)
        layout = make_layout(scene.height, scene.width, options.tile_size, options.overlap, options.scheme)
        say(f"Scene: {scene.width} x {scene.height} pixels at 10 m ({scene.width * scene.height * scene.pixel_area_m2 / 1e6:.2f} km2); "
            f"{len(layout)} tiles of {layout.tile_width} x {layout.tile_height} px, scheme '{options.scheme}'"
            + (f", overlap {options.overlap}" if options.scheme == "blend" else "")
            + f"; batch {options.batch_size} on {device.strip('/').split(':')[0]}; model {loaded.path}.")
        grid20, grid100 = _grids(scene)
        stats = ClassStats()
        tags = {"SOFTWARE": f"urbanmtl {__version__}", "URBANMTL_INPUT": scene.name,
                "URBANMTL_MODEL": str(loaded.path), "URBANMTL_SCHEME": options.scheme,
                "URBANMTL_TILE_SIZE": str(layout.tile_height), "URBANMTL_OVERLAP": str(options.overlap)}
        with OutputSet(plan, grid20, grid100, cog=options.cog, tags=tags, lock=lock) as out:
            accumulator = StripAccumulator(layout, out, scene.pixel_area_m2, stats)
            runner = NetworkRunner(loaded.network, device)
            try:
                run_tiles(scene, layout, runner, accumulator, options.batch_size, progress, is_cancelled)
            except READ_ERRORS as exc:   # outputs raise OutputError, so this is the input failing mid-way
                raise damaged_input_error(scene.name, exc) from None
            rows = stats.rows()
            out.commit(rows)
        warped = scene.warped
        valid_share = accumulator.valid_pixels / (scene.height * scene.width)
    seconds = time.perf_counter() - start
    say(f"Wrote {plan.hse}, {plan.lcz}" + (f", {plan.confidence}" if plan.confidence else "")
        + (f", {plan.stats}" if plan.stats else "") + f" in {seconds:.1f} s ({100 * valid_share:.1f} % of the "
        f"scene's pixels valid).")
    return PredictResult(
        hse_path=str(plan.hse), lcz_path=str(plan.lcz),
        confidence_path=str(plan.confidence) if plan.confidence else None,
        stats_path=str(plan.stats) if plan.stats else None,
        stats=rows, seconds=seconds, warped=warped, messages=messages,
    )


def _load(model_path: Optional[str], device: str):
    """Load the model on `device` and check that it maps both tasks."""
    import tensorflow as tf

    from .model import load_model

    with tf.device(device):
        loaded = load_model(model_path)
    if not (loaded.has_hse and loaded.has_lcz):
        have = "HSE" if loaded.has_hse else "LCZ"
        raise UrbanMTLError(
            f"The model '{loaded.path}' predicts only {have}, but mapping a scene needs both HSE and LCZ. Use a "
            f"multitask model (variant mtl_*), e.g. the bundled one."
        )
    return loaded


# --- command line ---


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.predict",
        description="Map human settlement extent (HSE density, 20 m) and Local Climate Zones (LCZ, 100 m) from "
                    "a Sentinel-2 scene with the urbanmtl multitask network.",
    )
    p.add_argument("input", nargs="+", help="Sentinel-2 raster (GeoTIFF, VRT, ...), SAFE folder or .zip, a folder "
                                            "of band files, or several band files")
    p.add_argument("--hse", required=True, help="output GeoTIFF: HSE density 0..1 at 20 m (nodata -1)")
    p.add_argument("--lcz", required=True, help="output GeoTIFF: LCZ codes 1..17 at 100 m (0 = nodata)")
    p.add_argument("--confidence", help="output GeoTIFF: probability of the winning LCZ class at 100 m")
    p.add_argument("--stats", help="output CSV: per LCZ class cells, area_km2 and mean HSE")
    p.add_argument("--model", help="model.keras or training run folder (default: the bundled model)")
    p.add_argument("--bands", nargs="+", metavar="NAME", help="Sentinel-2 name of every input band, file order")
    p.add_argument("--extent", nargs=4, type=float, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                   help="map only this rectangle (in the input's CRS unless --extent-crs)")
    p.add_argument("--extent-crs", help="CRS of --extent, e.g. EPSG:4326")
    p.add_argument("--tile-size", type=int, default=256, help="tile edge in 10 m pixels, multiple of 8 (256)")
    p.add_argument("--overlap", type=int, default=32, help="pixels each tile shares with each neighbour (32)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per network call (4)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where the network runs (auto)")
    p.add_argument("--offset", type=float, help="DN offset to apply instead of the metadata's (e.g. -1000)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs")
    p.add_argument("--scheme", choices=SCHEMES, default="blend",
                   help="blend: overlapping tiles, smooth weights; authors: four diagonal offsets, averaged")
    return p


#: Signals that stop a CLI run cleanly: the handler raises Interrupted, the stack unwinds, temporaries go.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def quiet_tensorflow_logs() -> None:
    """Hide TensorFlow's C++ INFO lines (CPU features, oneDNN notices), keep its warnings and errors. Only
    effective before TensorFlow is imported; an explicit TF_CPP_MIN_LOG_LEVEL is left as it is. Numerics are
    not touched (TF_ENABLE_ONEDNN_OPTS stays as the user set it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


#: The last stop signal the CLI's handler received (None: none). An exception that a stop signal set off
#: inside library code may reach main() in another guise; main() then still reports the stop.
_stop_received: Optional[int] = None


def _stop(signum, frame) -> None:
    global _stop_received
    _stop_received = signum
    if defer_signal(signum):      # outputs are being renamed, or a batch is in TensorFlow: stop right after
        return
    raise Interrupted(signum)


def _install_stop_handlers() -> dict:
    """Make SIGINT, SIGTERM and SIGHUP raise Interrupted (main thread only); returns the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for signum in STOP_SIGNALS:
        try:
            previous[signum] = signal.signal(signum, _stop)
        except (ValueError, OSError):  # pragma: no cover
            pass
    return previous


def _restore_handlers(previous: dict) -> None:
    """Put back the handlers main() replaced; the CLI's start-up handler becomes the default action (the run is
    over: a signal now simply ends the process, silently)."""
    for signum, handler in previous.items():
        if handler is None or getattr(handler, "__name__", "") == "_stopped_while_starting":
            handler = signal.SIG_DFL
        try:
            signal.signal(signum, handler)
        except (ValueError, OSError, TypeError):  # pragma: no cover
            pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The CLI. Exit status: 0 done; 2 a problem the message explains (nothing was written); 1 an unexpected
    failure (a bug: URBANMTL_DEBUG=1 shows the traceback); 128 + signal number when stopped (130 for Ctrl-C),
    every temporary file removed."""
    quiet_tensorflow_logs()
    args = build_parser().parse_args(argv)
    global _stop_received
    _stop_received = None
    previous = _install_stop_handlers()
    bar = None

    def progress(percent: float) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=100, unit="%", desc="predict", file=sys.stderr,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
        bar.update(percent - bar.n)

    def log(text: str) -> None:
        if bar is not None:
            bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def fail(text: str, code: int) -> int:
        if bar is not None:
            bar.close()
        print(f"error: {text}", file=sys.stderr, flush=True)
        return code

    try:
        options = PredictOptions(
            bands=args.bands, extent=tuple(args.extent) if args.extent else None, extent_crs=args.extent_crs,
            tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size, device=args.device,
            overwrite=args.overwrite, cog=args.cog, scheme=args.scheme, offset=args.offset,
        )
        source: InputSpec = args.input[0] if len(args.input) == 1 else args.input
        import rasterio

        # Inside a rasterio environment GDAL's own messages go to Python logging instead of raw "ERROR 1: ..."
        # lines on stderr; every failure that matters comes back as one error line that quotes GDAL's reason.
        with rasterio.Env():
            result = predict_scene(
                source, args.hse, args.lcz, confidence_path=args.confidence, stats_path=args.stats,
                model_path=args.model, options=options, progress=progress, log=log,
            )
    except UrbanMTLError as exc:
        return fail(str(exc), 2)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Interrupted):
            return fail(str(exc), exc.exit_code)
        return fail("interrupted (SIGINT); no output was written.", 128 + signal.SIGINT)
    except MemoryError:
        return fail("out of memory; no output was written. Use a smaller --tile-size or --batch-size, or close "
                    "other programs.", 2)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return fail(f"{exc.strerror or exc}{where}; no output was written. Check the disk space and the "
                    f"permissions of the input and output folders.", 2)
    except Exception as exc:
        if _stop_received is not None and not os.environ.get("URBANMTL_DEBUG"):
            return fail(str(Interrupted(_stop_received)), 128 + _stop_received)
        if os.environ.get("URBANMTL_DEBUG"):
            raise
        return fail(f"unexpected {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                    f"; no output was written. This is a bug: run again with URBANMTL_DEBUG=1 to see where it "
                    f"happened, and report it.", 1)
    finally:
        # Nothing may interrupt the last clean-up: ignore further stop signals while removing what is left.
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                try:
                    signal.signal(signum, signal.SIG_IGN)
                except (ValueError, OSError):  # pragma: no cover
                    pass
        remove_temporaries()
        _restore_handlers(previous)
    if bar is not None:
        bar.close()
    for row in result.stats:
        if row["cells"]:
            mean = "" if row["mean_hse"] is None else f"{row['mean_hse']:.3f}"
            print(f"{row['letter']:>2} {row['name']:<22} {row['cells']:>8} cells {row['area_km2']:>10.2f} km2  "
                  f"mean HSE {mean}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
