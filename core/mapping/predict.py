"""Map HSE density (20 m) and LCZ (100 m) over a whole Sentinel-2 scene: the engine's entry, predict_scene.

predict_scene checks the options and outputs, opens the scene (core.inputs), reads the model's card (checked against
the contract, core.common.spec.check_card), chooses the runtime (LiteRT or TensorFlow, core.network.runtime), gets the
network from its `networks` (core.mapping.networks.Networks: the model loaded for that runtime, its call on batches),
lays out the tiles (core.tiling) and streams them through the network into the outputs (core.mapping.
accumulate, core.outputs); the exports (core.outputs.export) follow. The command line is core.predict:

    python -m core.predict scene.tif --hse hse.tif --lcz lcz.tif [--confidence conf.tif] [--stats stats.csv]

What a caller may vary is passed in, never swapped in a module: `networks` (e.g. core.cluster keeps one model
per process for scene after scene), progress, cancellation and log callbacks; the result says how many tiles ran.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import numpy as np

from ..common import __version__
from ..common.atomic import atomic_write
from ..common.errors import UrbanMTLError
from ..common.signals import critical_section, signals_deferred
from ..common.options import PredictOptions
from ..common.spec import (
    ATTENTIONS, CELL, DEFAULT_TILE_SIZE, DEVICES, OUTPUT_FACTOR, RUNTIMES, default_batch_size,
)
from ..inputs.checks import check_offset
from ..inputs.errors import READ_ERRORS, damaged_input_error
from ..inputs.scene import InputSpec, Scene, open_scene
from ..outputs import (
    ClassStats, GridSpec, OutputLock, OutputSet, check_exports, check_outputs_apart, export_lcz, plan_outputs,
    write_stats_csv,
)
from ..tiling import TileLayout, attention_window, check_tiling, make_layout, model_tiling
from .accumulate import StripAccumulator, run_tiles
from .networks import Networks, RunRuntime, read_model, run_runtime


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
    exports: dict = field(default_factory=dict)   # what core.outputs.export.export_lcz did (empty without exports)
    tiles: int = 0                                # tiles in the run's layout
    runtime: str = ""                             # what ran the network (core.mapping.networks.RunRuntime.describe)


def validate_options(options: PredictOptions) -> None:
    """Raise UrbanMTLError for options no run can use (checked before anything is opened). A tile size or overlap
    left to the model (None) is checked with the model's values once its card is read."""
    check_tiling(DEFAULT_TILE_SIZE if options.tile_size is None else options.tile_size,
                 0 if options.overlap is None else options.overlap, options.scheme)
    if options.batch_size is not None and (not isinstance(options.batch_size, (int, np.integer))
                                           or options.batch_size < 1):
        raise UrbanMTLError(f"batch_size must be a positive whole number; got {options.batch_size}.")
    if options.device not in DEVICES:
        raise UrbanMTLError(f"Unknown device '{options.device}'. Choose one of: {', '.join(DEVICES)}.")
    if options.extent is not None and len(options.extent) != 4:
        raise UrbanMTLError(f"The extent must be 4 numbers xmin ymin xmax ymax; got {list(options.extent)}.")
    check_offset(options.offset, "The DN offset (--offset)")
    if options.attention not in ATTENTIONS:
        raise UrbanMTLError(f"Unknown attention '{options.attention}'. Choose one of: {', '.join(ATTENTIONS)}.")
    if options.runtime not in RUNTIMES:
        raise UrbanMTLError(f"Unknown runtime '{options.runtime}'. Choose one of: {', '.join(RUNTIMES)}.")


def resolve_tiling(options: PredictOptions, card: dict) -> PredictOptions:
    """`options` with a tile size/overlap left to the model (None) taken from its card (core.tiling.model_tiling,
    for windowed or per-tile attention); an overlap too large for a smaller tile the user chose is cut to half
    that tile's size; a batch size left open is the tile size's (core.common.spec.default_batch_size)."""
    tile, overlap = model_tiling(card, windowed=window_of(options, card) is not None)
    tile = tile if options.tile_size is None else options.tile_size
    if options.overlap is not None:
        overlap = options.overlap
    elif 2 * overlap > tile:
        overlap = tile // 2
    check_tiling(tile, overlap, options.scheme)
    batch = default_batch_size(tile) if options.batch_size is None else options.batch_size
    return replace(options, tile_size=tile, overlap=overlap, batch_size=batch)


def _grids(scene: Scene) -> tuple[GridSpec, GridSpec]:
    t = scene.transform
    h20, w20 = math.ceil(scene.height / OUTPUT_FACTOR), math.ceil(scene.width / OUTPUT_FACTOR)
    grid20 = GridSpec(h20, w20, t * t.scale(OUTPUT_FACTOR, OUTPUT_FACTOR), scene.crs)
    f = OUTPUT_FACTOR * CELL
    grid100 = GridSpec(math.ceil(h20 / CELL), math.ceil(w20 / CELL), t * t.scale(f, f), scene.crs)
    return grid20, grid100


def _input_names(source: InputSpec) -> list[str]:
    return [str(source)] if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__") else [str(s) for s in source]


def window_of(options: PredictOptions, card: dict) -> Optional[int]:
    """The attention window (20 m pixels) a run maps with, or None when the attention pools over each tile."""
    return attention_window(card) if options.attention == "window" else None


def _check_exports(plan: Any, inputs: list[str], umep_path: Optional[str], w2w_path: Optional[str],
                   majority: int, overwrite: bool) -> None:
    """core.outputs.export.check_exports, after this one: no export may be another output of the run or an input file."""
    taken = {os.path.realpath(str(p)): what for p, what in ((plan.hse, "the HSE map"),
                                                             (plan.confidence, "the confidence map"),
                                                             (plan.stats, "the statistics table")) if p}
    taken.update({os.path.realpath(p): "an input file" for p in inputs})
    for export in (umep_path, w2w_path):
        if export and os.path.realpath(export) in taken:
            raise UrbanMTLError(f"The export '{export}' would replace {taken[os.path.realpath(export)]}. Choose "
                                f"another file name.")
    check_exports(plan.lcz, umep_path, w2w_path, majority, overwrite)


def _say_exports(exports: dict, say: Callable[[str], None]) -> None:
    if exports.get("majority"):
        size = exports["majority"]
        say(f"Majority filter {size}x{size}: {exports['changed_cells']} cell(s) of the LCZ map changed class (the "
            f"area statistics count the filtered map; the confidence map keeps the network's probability of its "
            f"own class there).")
    written = [exports[k] for k in ("umep", "w2w") if exports.get(k)]
    if written:
        say(f"Wrote {', '.join(written)}.")


# --- the steps of predict_scene ---


def _say_opened(lock: OutputLock, scene: Scene, say: Callable[[str], None]) -> None:
    """Say the notes of the output lock and of the scene."""
    for text in lock.notes + scene.messages:
        say(text)
    if lock.stale_removed:
        say(f"Removed {len(lock.stale_removed)} temporary file(s) that an earlier, stopped run left beside "
            f"the outputs: {', '.join(p.name for p in lock.stale_removed)}.")


def _model_and_layout(scene: Scene, model_path: Optional[str], options: PredictOptions, networks: Networks,
                      say: Callable[[str], None]) -> tuple[RunRuntime, Any, Any, PredictOptions, TileLayout]:
    """(runtime, network to map with, loaded model, options with the model's tiling, tile layout) of a run, and
    the line saying them. A scene with no valid pixel is refused first; the model's card decides the tiling and,
    with the options, the runtime (core.mapping.networks) before any runtime is loaded."""
    if not scene.has_valid_pixels():
        raise UrbanMTLError(
            f"The input {scene.name} has no valid pixel in the area to map (every pixel is nodata or 0 in all "
            f"bands). Check the extent, the file's nodata value, or choose another scene."
        )
    model_file, card = read_model(model_path)
    options = resolve_tiling(options, card)
    window = window_of(options, card)
    runtime = run_runtime(options.runtime, options.device, model_file, card, window)
    with signals_deferred():             # Keras builds the network through TensorFlow's C++
        loaded = networks.load(model_path, runtime)
        network = networks.mapping(loaded, window)
    layout = make_layout(scene.height, scene.width, options.tile_size, options.overlap, options.scheme)
    km2 = scene.width * scene.height * scene.pixel_area_m2 / 1e6
    say(f"Scene: {scene.width} x {scene.height} pixels at 10 m ({km2:.2f} km2); {len(layout)} tiles of "
        f"{layout.tile_width} x {layout.tile_height} px, scheme '{options.scheme}'"
        + (f", overlap {options.overlap}" if options.scheme == "blend" else "")
        + (f"; attention over {2 * window} px windows" if window else "; attention over each tile")
        + f"; batch {options.batch_size}; {runtime.describe()} ({runtime.choice.reason}); model {loaded.path}.")
    return runtime, network, loaded, options, layout


def _map_tiles(scene: Scene, layout: TileLayout, network: Any, loaded: Any, runtime: RunRuntime, options: PredictOptions,
               plan: Any, lock: OutputLock, networks: Networks, progress: Optional[Callable[[float], None]],
               is_cancelled: Optional[Callable[[], bool]], keep_cells: bool = False
               ) -> tuple[ClassStats, StripAccumulator]:
    """Run every tile into the outputs and commit them: (the LCZ class statistics, the accumulator). keep_cells:
    the statistics keep their per-cell values, to be recounted after a majority filter (_recount)."""
    grid20, grid100 = _grids(scene)
    stats = ClassStats(keep_cells=(grid100.height, grid100.width) if keep_cells else None)
    tags = {"SOFTWARE": f"urbanmtl {__version__}", "URBANMTL_INPUT": scene.name,
            "URBANMTL_MODEL": str(loaded.path), "URBANMTL_SCHEME": options.scheme,
            "URBANMTL_TILE_SIZE": str(layout.tile_height), "URBANMTL_OVERLAP": str(options.overlap),
            "URBANMTL_ATTENTION": options.attention, "URBANMTL_RUNTIME": runtime.tag()}
    with OutputSet(plan, grid20, grid100, cog=options.cog, tags=tags, lock=lock) as out:
        accumulator = StripAccumulator(layout, out, scene.pixel_area_m2, stats)
        runner = networks.runner(network, runtime)
        try:
            run_tiles(scene, layout, runner, accumulator, options.batch_size, progress, is_cancelled)
        except READ_ERRORS as exc:   # outputs raise OutputError, so this is the input failing mid-way
            raise damaged_input_error(scene.name, exc) from None
        out.commit(stats.rows())
    return stats, accumulator


def _export(plan: Any, stats: ClassStats, umep_path: Optional[str], w2w_path: Optional[str], majority: int,
            overwrite: bool, say: Callable[[str], None]) -> tuple[list[dict], dict]:
    """The LCZ exports (core.outputs.export.export_lcz) of a written map: (the class rows, recounted after a majority
    filter, and what export_lcz did). A stop signal waits for them (a 100 m map: a fraction of a second)."""
    with critical_section(f"{plan.lcz} and its exports are written."):
        exports = export_lcz(plan.lcz, umep_path, w2w_path, majority, overwrite=overwrite)
        rows = _recount(plan, stats) if majority else stats.rows()
    _say_exports(exports, say)
    return rows, exports


def _recount(plan: Any, stats: ClassStats) -> list[dict]:
    """The class rows of the majority-filtered LCZ map (read back from plan.lcz), also written over the
    statistics CSV when there is one, so that the table describes the map the user gets."""
    import rasterio

    with rasterio.open(plan.lcz) as ds:
        rows = stats.recount(ds.read(1)).rows()
    if plan.stats:
        with atomic_write(plan.stats, fsync=True) as tmp:
            write_stats_csv(tmp, rows)
    return rows


def predict_scene(input_path: InputSpec, hse_path: str, lcz_path: str, *, confidence_path: Optional[str] = None,
                  stats_path: Optional[str] = None, model_path: Optional[str] = None,
                  options: Optional[PredictOptions] = None,
                  progress: Optional[Callable[[float], None]] = None,
                  is_cancelled: Optional[Callable[[], bool]] = None,
                  log: Optional[Callable[[str], None]] = None, umep_path: Optional[str] = None,
                  w2w_path: Optional[str] = None, majority: int = 0,
                  networks: Optional[Networks] = None) -> PredictResult:
    """Predict HSE density and LCZ for a scene and write the outputs.

    input_path: a raster, a SAFE folder/.zip, a folder of band files, a glob pattern, or a list of band files.
    Outputs: hse_path float32 0..1 at 20 m (nodata -1); lcz_path uint8 codes 1..17 at 100 m (0 = nodata,
    colour table and category names); confidence_path float32 winning probability at 100 m (nodata -1);
    stats_path CSV of per-class cells, area and mean HSE. All grids share the scene's upper-left corner;
    a partial last pixel/cell is included. A 20 m pixel or 100 m cell is valid when at least half of its
    10 m input pixels are valid. progress gets percent 0..100; is_cancelled is checked between batches
    (then Cancelled is raised and nothing is written); log gets each message; networks gives the network
    (default: Networks(), the model loaded for this run).
    Exports (core.outputs.export, checked before any work, applied once the LCZ map is written): majority = 3 or 5
    majority-filters the LCZ map in place; umep_path and w2w_path get its UMEP-coded and w2w (EPSG:4326) copies.
    """
    start = time.perf_counter()
    options = options or PredictOptions()
    networks = networks or Networks()
    messages: list[str] = []

    def say(text: str) -> None:
        messages.append(text)
        if log is not None:
            log(text)

    validate_options(options)
    plan = plan_outputs(hse_path, lcz_path, confidence_path, stats_path, overwrite=options.overwrite,
                        inputs=_input_names(input_path))
    exporting = bool(umep_path or w2w_path or majority)
    if exporting:
        _check_exports(plan, _input_names(input_path), umep_path, w2w_path, majority, options.overwrite)
    # The output names are locked for the whole run: a second run writing any of them is refused at once.
    with OutputLock(plan) as lock, open_scene(
            input_path, bands=options.bands, extent=options.extent, extent_crs=options.extent_crs,
            offset=options.offset) as scene:
        _say_opened(lock, scene, say)
        check_outputs_apart(plan, scene.files)
        runtime, network, loaded, options, layout = _model_and_layout(scene, model_path, options, networks, say)
        stats, accumulator = _map_tiles(scene, layout, network, loaded, runtime, options, plan, lock, networks,
                                        progress, is_cancelled, keep_cells=bool(majority))
        if exporting:   # still under the output lock
            rows, exports = _export(plan, stats, umep_path, w2w_path, majority, options.overwrite, say)
        else:
            rows, exports = stats.rows(), {}
        warped = scene.warped
        valid_share = accumulator.valid_pixels / (scene.height * scene.width)
    seconds = time.perf_counter() - start
    say(f"Wrote {plan.hse}, {plan.lcz}" + (f", {plan.confidence}" if plan.confidence else "")
        + (f", {plan.stats}" if plan.stats else "") + f" in {seconds:.1f} s ({100 * valid_share:.1f} % of the "
        f"scene's pixels valid).")
    return PredictResult(hse_path=str(plan.hse), lcz_path=str(plan.lcz), confidence_path=_text(plan.confidence),
                         stats_path=_text(plan.stats), stats=rows, seconds=seconds, warped=warped, messages=messages,
                         exports=exports, tiles=len(layout), runtime=runtime.describe())


def _text(path: Optional[Any]) -> Optional[str]:
    return str(path) if path else None
