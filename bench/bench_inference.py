"""Benchmark of scene inference: speed (km2/s), peak memory, overhead over pure model compute, FLOP rate.

Run by hand from the repository root:

    .venv/bin/python bench/bench_inference.py --quick                  # 512 and 1024 px scenes
    .venv/bin/python bench/bench_inference.py --sizes 2048 --methods blend patch   # km2/s against the peer
    .venv/bin/python bench/bench_inference.py --sizes 10980 --methods blend        # a full Sentinel-2 tile

Everything is the engine's defaults unless told otherwise: the bundled model, its tiling (core.tiling.
model_tiling: 512 px tiles overlapping by 32 with windowed attention), its batch size (core.common.spec.
default_batch_size: one 512 px tile per call), device auto.

Methods, each run in its own child process so its peak RSS (the kernel's high-water mark) is its own:
  blend    core.mapping.predict.predict_scene, overlapping tiles with smooth blending weights (this project)
  authors  the same engine with scheme="authors" (four diagonal offsets, no overlap, averaged)
  patch    the patch-wise peer: the So2Sat LCZ42 ResNet20 (../shared/teachers) on one 32 x 32 patch per
           100 m cell, centred on the cell, batched; LCZ only (that network has no HSE output)
Scenes are synthetic 10-band uint16 rasters of S x S 10 m pixels: one 1024 x 1024 DEFLATE GeoTIFF tile repeated
by a VRT mosaic, so a 10980 px scene needs 20 MB of disk; reading it is cheaper than reading a real scene (the
tile stays in GDAL's block cache), so the figures slightly favour I/O. --random-weights: the paper's network
(base width 16) with random weights instead of the bundled model (speed does not depend on the weights).

FLOPs are counted by TensorFlow's graph profiler (tf.compat.v1 profiler, float_operation: 2 per multiply-add)
on the traced inference function for one tile / one patch. "pure" is the time of the network calls alone on
pre-made batches of the same shape and number as the run used (timed on up to 20 batches, then scaled).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROCESS_START = time.perf_counter()

from core.common.spec import ATTENTIONS  # noqa: E402  (no TensorFlow)

TEACHER = REPO / ".." / "shared" / "teachers" / "so2sat_lcz42_s2_resnet20.keras"
BASE_TILE = 1024


# --- synthetic scenes ---


def make_base_tile(path: Path) -> None:
    """A 1024 x 1024, 10-band (model order) uint16 GeoTIFF with fields, roads and noise, DEFLATE-tiled."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from core.common.bands import MODEL_BANDS

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:BASE_TILE, 0:BASE_TILE].astype(np.float32)
    fields = (np.sin(x / 37.0) * np.cos(y / 23.0) > 0).astype(np.float32)
    roads = ((x % 97 < 3) | (y % 131 < 3)).astype(np.float32)
    data = []
    for k in range(len(MODEL_BANDS)):
        band = 800 + 600 * k / 9 + 900 * fields * (k > 5) + 1200 * roads + 150 * rng.standard_normal(fields.shape)
        data.append(np.clip(band, 1, 10000).astype(np.uint16))
    profile = dict(driver="GTiff", width=BASE_TILE, height=BASE_TILE, count=len(MODEL_BANDS), dtype="uint16",
                   crs="EPSG:32633", transform=from_origin(300000, 5900040, 10, 10), tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", predictor=2)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack(data))
        for i, name in enumerate(MODEL_BANDS, start=1):
            dst.set_band_description(i, name)


def make_scene_vrt(base: Path, size: int, path: Path) -> None:
    """A size x size VRT mosaic of the base tile (same CRS, 10 m, band names kept)."""
    from core.common.bands import MODEL_BANDS

    n = math.ceil(size / BASE_TILE)
    lines = [f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">',
             "  <SRS>EPSG:32633</SRS>", "  <GeoTransform>300000, 10, 0, 5900040, 0, -10</GeoTransform>"]
    for b, name in enumerate(MODEL_BANDS, start=1):
        lines += [f'  <VRTRasterBand dataType="UInt16" band="{b}">', f"    <Description>{name}</Description>",
                  "    <NoDataValue>0</NoDataValue>"]
        for r in range(n):
            for c in range(n):
                lines += ["    <SimpleSource>", f'      <SourceFilename relativeToVRT="0">{base}</SourceFilename>',
                          f"      <SourceBand>{b}</SourceBand>",
                          f'      <SrcRect xOff="0" yOff="0" xSize="{BASE_TILE}" ySize="{BASE_TILE}" />',
                          f'      <DstRect xOff="{c * BASE_TILE}" yOff="{r * BASE_TILE}" xSize="{BASE_TILE}" '
                          f'ySize="{BASE_TILE}" />', "    </SimpleSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    path.write_text("\n".join(lines))


# --- measurements inside a child process ---


def rss_mb() -> tuple[float, float]:
    """(current RSS, high-water mark) of this process in MB, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def graph_flops(fn, shape: tuple[int, ...]) -> float:
    """FLOPs of one call of a tf.function on a float32 input of `shape`, by the TF graph profiler."""
    import tensorflow as tf
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    concrete = tf.function(fn, autograph=False).get_concrete_function(tf.TensorSpec(shape, tf.float32))
    opts = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return float(profile(concrete.graph, options=opts).total_float_ops)


def pure_compute_seconds(call, batch_shape: tuple[int, ...], n_batches: int, last_batch: int) -> tuple[float, float]:
    """(seconds for n_batches network calls on pre-made random batches, the last of last_batch items;
    extra seconds of the first call, i.e. tracing the tf.function)."""
    import numpy as np

    x = np.random.default_rng(1).uniform(0, 0.4, batch_shape).astype(np.float32)
    t0 = time.perf_counter()
    call(x)                                                      # warm-up (tracing)
    first = time.perf_counter() - t0
    timed = min(n_batches, 20)
    t0 = time.perf_counter()
    for _ in range(timed):
        call(x)
    per_batch = (time.perf_counter() - t0) / timed
    partial = 0.0
    if last_batch and last_batch != batch_shape[0]:
        t0 = time.perf_counter()
        call(x[:last_batch])
        partial = time.perf_counter() - t0 - per_batch
    return per_batch * n_batches + partial, max(0.0, first - per_batch)


def child_engine(args: dict) -> dict:
    """One run of predict_scene on a scene, then the pure network time on the same tiles, with the same network
    (the mapping network: windowed attention unless --attention tile)."""
    from core.mapping.predict import (
        Networks, NetworkRunner, PredictOptions, predict_scene, resolve_tiling, select_device, window_of,
    )
    from core.tiling.layout import make_layout

    marks: dict[str, float] = {}
    base_rss = [0.0]

    def log(text: str) -> None:
        if text.startswith("Scene:"):
            marks["start"] = time.perf_counter()
            base_rss[0] = rss_mb()[0]

    out = Path(args["out"])
    options = PredictOptions(tile_size=args["tile_size"], overlap=args["overlap"], batch_size=args["batch_size"],
                             device=args["device"], scheme=args["scheme"], attention=args["attention"],
                             overwrite=True)
    t0 = time.perf_counter()
    predict_scene(args["scene"], str(out / "hse.tif"), str(out / "lcz.tif"), model_path=args["model"],
                  options=options, log=log)
    total = time.perf_counter() - t0
    engine = time.perf_counter() - marks["start"]
    _, peak = rss_mb()
    peak_kernel = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    size = args["size"]
    networks = Networks()
    device = select_device(args["device"])
    loaded = networks.load(args["model"], device)
    options = resolve_tiling(options, loaded.card)
    network = networks.mapping(loaded, window_of(options, loaded.card))
    layout = make_layout(size, size, options.tile_size, options.overlap, options.scheme)
    runner = NetworkRunner(network, device)
    th, tw = layout.tile_height, layout.tile_width
    n_tiles = len(layout.tiles)
    batch = options.batch_size
    n_batches = math.ceil(n_tiles / batch)
    last = n_tiles - (n_batches - 1) * batch
    pure, trace = pure_compute_seconds(runner, (batch, th, tw, 10), n_batches, last)
    flops_tile = graph_flops(lambda x: network(x, training=False), (1, th, tw, 10))
    startup = marks["start"] - PROCESS_START + trace    # importing TensorFlow, loading, building, tracing
    return dict(total_s=total, engine_s=engine, pure_s=pure, trace_s=trace, tiles=n_tiles, tile=f"{th}x{tw}",
                overlap=options.overlap, batch=batch, startup_s=startup, model_flops_px=flops_tile / (th * tw),
                flops=flops_tile * n_tiles,
                peak_mb=peak_kernel, base_mb=base_rss[0], hwm_mb=peak, km2=size * size * 1e-4)


def child_patch(args: dict) -> dict:
    """The patch-wise peer: one centred 32 x 32 patch per 100 m cell through the So2Sat ResNet20, streamed by
    rows of cells, LCZ written at 100 m."""
    import numpy as np
    import rasterio
    import tensorflow as tf
    import keras

    from core.outputs.writer import lcz_colormap
    from core.mapping.predict import select_device
    from core.inputs.scene import open_scene

    device = select_device(args["device"])
    with tf.device(device):
        model = keras.saving.load_model(args["teacher"], compile=False)
    fn = tf.function(lambda x: model(x, training=False), autograph=False,
                     input_signature=[tf.TensorSpec([None, 32, 32, 10], tf.float32)])

    def call(x):
        with tf.device(device):
            return np.asarray(fn(tf.constant(x)))

    base = rss_mb()[0]
    t_start = time.perf_counter()
    patches_run = 0
    batch = args["patch_batch"]
    with open_scene(args["scene"]) as scene:
        rows, cols = math.ceil(scene.height / 10), math.ceil(scene.width / 10)
        t = scene.transform
        profile = dict(driver="GTiff", width=cols, height=rows, count=1, dtype="uint8", crs=scene.crs,
                       transform=t * t.scale(10, 10), nodata=0, tiled=True, compress="deflate")
        group = max(1, batch // cols)                        # cell rows per network call
        with rasterio.open(Path(args["out"]) / "lcz_patch.tif", "w", **profile) as dst:
            dst.write_colormap(1, lcz_colormap())
            for r0 in range(0, rows, group):
                r1 = min(rows, r0 + group)
                # Rows/columns [10 r + 5 - 16, 10 r + 5 + 16): the window centred on the cell centre.
                strip, _ = scene.read(10 * r0 - 11, -11, 10 * (r1 - r0 - 1) + 32, 10 * (cols - 1) + 32)
                windows = np.lib.stride_tricks.sliding_window_view(strip, (32, 32), axis=(0, 1))[::10, ::10]
                x = np.ascontiguousarray(windows.transpose(0, 1, 3, 4, 2).reshape(-1, 32, 32, 10))
                probs = np.concatenate([call(x[i:i + batch]) for i in range(0, len(x), batch)])
                codes = (probs.argmax(-1) + 1).astype(np.uint8).reshape(r1 - r0, cols)
                dst.write(codes[np.newaxis], window=rasterio.windows.Window(0, r0, cols, r1 - r0))
                patches_run += len(x)
    engine = time.perf_counter() - t_start
    peak_kernel = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_batches = math.ceil(patches_run / batch)
    pure, trace = pure_compute_seconds(call, (batch, 32, 32, 10), n_batches,
                                       patches_run - (n_batches - 1) * batch)
    flops_patch = graph_flops(lambda x: model(x, training=False), (1, 32, 32, 10))
    size = args["size"]
    return dict(total_s=engine, engine_s=engine, pure_s=pure, trace_s=trace, tiles=patches_run, tile="32x32",
                model_flops_px=flops_patch / (32 * 32), flops=flops_patch * patches_run,
                peak_mb=peak_kernel, base_mb=base, hwm_mb=rss_mb()[1], km2=size * size * 1e-4)


# --- the parent: scenes, children, table ---


def run_child(kind: str, args: dict, timeout: float) -> Optional[dict]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(args)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        print(f"  {kind} {args['size']} px: stopped after {timeout:.0f} s", file=sys.stderr)
        return None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    print(f"  {kind} {args['size']} px failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 10980], help="scene edges in 10 m pixels")
    p.add_argument("--quick", action="store_true", help="only 512 and 1024 px scenes")
    p.add_argument("--methods", nargs="+", default=["blend", "authors", "patch"], choices=["blend", "authors", "patch"])
    p.add_argument("--model", help="model.keras (default: the bundled model)")
    p.add_argument("--random-weights", action="store_true", help="the paper's network with random weights")
    p.add_argument("--teacher", default=str(TEACHER), help="So2Sat ResNet20 .keras for the patch-wise peer")
    p.add_argument("--tile-size", type=int, help="default: the engine's for the model (core.tiling.model_tiling)")
    p.add_argument("--overlap", type=int, help="default: the engine's for the model")
    p.add_argument("--batch-size", type=int, help="default: the engine's for the tile size")
    p.add_argument("--attention", default=ATTENTIONS[0], choices=ATTENTIONS)
    p.add_argument("--patch-batch", type=int, default=256)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed to one run")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        kind, payload = a.child
        result = (child_patch if kind == "patch" else child_engine)(json.loads(payload))
        print("RESULT " + json.dumps(result))
        return 0

    sizes = [512, 1024] if a.quick else a.sizes
    if "patch" in a.methods and not Path(a.teacher).exists():
        print(f"note: {a.teacher} not found; the patch-wise peer is skipped.", file=sys.stderr)
        a.methods = [m for m in a.methods if m != "patch"]
    work = Path(tempfile.mkdtemp(prefix="urbanmtl-bench-"))
    model = a.model
    if a.random_weights:
        from core.network.model import ModelConfig, build_networks
        from core.network.saving import base_card, save_model

        config = ModelConfig()
        network = build_networks(config)[1]
        model = str(save_model(network, work / "random" / "model.keras", base_card(config, network)))
    base = work / "base.tif"
    make_base_tile(base)
    rows = []
    for size in sizes:
        scene = work / f"scene_{size}.vrt"
        make_scene_vrt(base, size, scene)
        for method in a.methods:
            out = work / f"out_{size}_{method}"
            out.mkdir()
            args = dict(scene=str(scene), size=size, out=str(out), model=model, teacher=a.teacher,
                        tile_size=a.tile_size, overlap=a.overlap, batch_size=a.batch_size, attention=a.attention,
                        patch_batch=a.patch_batch, device=a.device,
                        scheme="authors" if method == "authors" else "blend")
            print(f"running {method} on {size} x {size} px ...", file=sys.stderr, flush=True)
            res = run_child("patch" if method == "patch" else "engine", args, a.timeout)
            if res is not None:
                rows.append((size, method, res))
    print_table(rows, a)
    return 0


def print_table(rows: list[tuple[int, str, dict]], a) -> None:
    tiling = sorted({f"{r['tile']} px overlap {r['overlap']} batch {r['batch']}" for _, m, r in rows if "overlap" in r})
    print(f"\nurbanmtl inference benchmark  (tiles {', '.join(tiling) or '-'}, attention {a.attention}; model {a.model or ('random weights' if a.random_weights else 'bundled')}; patch batch "
          f"{a.patch_batch}; device {a.device}; {os.cpu_count()} CPUs visible)")
    head = (f"{'size px':>8} {'method':>8} {'km2':>8} {'units':>8} {'total s':>8} {'engine s':>9} {'km2/s':>7} "
            f"{'pure s':>7} {'trace s':>7} {'overhead':>8} {'GFLOP':>7} {'GFLOP/s':>8} {'kFLOP/in':>9} "
            f"{'kFLOP/map':>9} {'base MB':>8} {'peak MB':>8}")
    print(head)
    print("-" * len(head))
    for size, method, r in rows:
        overhead = 100 * (r["engine_s"] - r["pure_s"]) / r["engine_s"]
        print(f"{size:>8} {method:>8} {r['km2']:>8.1f} {r['tiles']:>8} {r['total_s']:>8.1f} {r['engine_s']:>9.1f} "
              f"{r['km2'] / r['engine_s']:>7.2f} {r['pure_s']:>7.1f} {r['trace_s']:>7.1f} {overhead:>7.0f}% "
              f"{r['flops'] / 1e9:>7.0f} {r['flops'] / r['engine_s'] / 1e9:>8.1f} "
              f"{r['model_flops_px'] / 1e3:>9.0f} {r['flops'] / (size * size) / 1e3:>9.0f} "
              f"{r['base_mb']:>8.0f} {r['peak_mb']:>8.0f}")
    print("\nunits: tiles run (blend/authors) or patches (patch). engine s: from the first tile to the last "
          "output renamed (model loading excluded; total s includes it). pure s: the same network calls on "
          "pre-made batches; trace s: extra cost of the first call (tf.function tracing), part of engine s. "
          "overhead: share of engine time not spent in network calls (reading, blending, writing, tracing). "
          "GFLOP: network FLOPs of the run (TF graph profiler); kFLOP/in: per network input pixel (the "
          "model's cost); kFLOP/map: per mapped scene pixel (tile overlap, offsets or patch overlap "
          "included). base MB: RSS after loading, before the first tile; peak MB: the RSS high-water mark.")
    by = {(s, m): r for s, m, r in rows}
    for size, method, r in rows:
        if "startup_s" in r:
            print(f"{size} px {method}: start-up {r['startup_s']:.1f} s (importing TensorFlow, loading the model, "
                  f"building the mapping network, tracing its call), before the first tile")
    for size in sorted({s for s, _, _ in rows}):
        b = by.get((size, "blend"))
        for other in ("authors", "patch"):
            o = by.get((size, other))
            if b and o:
                print(f"{size} px: blend is {o['engine_s'] / b['engine_s']:.2f}x the speed of {other} "
                      f"(km2/s {b['km2'] / b['engine_s']:.2f} vs {o['km2'] / o['engine_s']:.2f}); "
                      f"peak RSS {b['peak_mb']:.0f} vs {o['peak_mb']:.0f} MB")
    sizes = sorted({s for s, m, _ in rows if m == "blend"})
    if len(sizes) > 1:
        lo, hi = by[(sizes[0], "blend")], by[(sizes[-1], "blend")]
        print(f"blend peak RSS {lo['peak_mb']:.0f} MB at {sizes[0]} px -> {hi['peak_mb']:.0f} MB at {sizes[-1]} px "
              f"({(sizes[-1] / sizes[0]) ** 2:.0f}x the area)")


if __name__ == "__main__":
    sys.exit(main())
