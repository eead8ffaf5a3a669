"""Benchmark of scene inference: speed (km2/s), start-up, peak memory, overhead over pure network compute.

Run by hand from the repository root:

    .venv/bin/python bench/bench_inference.py --quick                  # 512 and 1024 px scenes
    .venv/bin/python bench/bench_inference.py --sizes 3072 --cli     # both runtimes and the peer, whole processes
    .venv/bin/python bench/bench_inference.py --sizes 10980 --methods litert      # a full Sentinel-2 tile

Everything is the engine's defaults unless told otherwise: the bundled model, its tiling (core.tiling.
model_tiling: 512 px tiles overlapping by 32 with windowed attention), its batch size (core.common.spec.
default_batch_size: one 512 px tile per call), device auto.

Methods, each run in its own child process so its peak RSS (the kernel's high-water mark) is its own:
  litert      core.mapping.predict.predict_scene on LiteRT (XNNPACK), overlapping tiles with smooth blending weights
  tensorflow  the same on TensorFlow
  authors     the engine (its automatic runtime) with scheme="authors" (four diagonal offsets, no overlap, averaged)
  patch       the patch-wise peer: the So2Sat LCZ42 ResNet20 (../shared/teachers) on TensorFlow, one 32 x 32 patch
              per 100 m cell, centred on the cell, batched; LCZ only (that network has no HSE output)
Scenes are synthetic 10-band uint16 rasters of S x S 10 m pixels: one 1024 x 1024 DEFLATE GeoTIFF tile repeated
by a VRT mosaic, so a 10980 px scene needs 20 MB of disk; reading it is cheaper than reading a real scene (the
tile stays in GDAL's block cache), so the figures slightly favour I/O; --scene FILE measures a real scene instead.
--cli also times whole `python -m core.predict SCENE --hse H --lcz L` processes with no flags, as a user runs them,
on each scene and (best of 2) on a 256 px scene.

"pure" is the time of the network calls alone on pre-made batches of the same shape and number as the run used
(timed on up to 20 batches, then scaled).
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


def make_scene_vrt(base: Path, size: int, path: Path, height: Optional[int] = None) -> None:
    """A size x size (or size x height) VRT mosaic of the base tile (same CRS, 10 m, band names kept)."""
    from core.common.bands import MODEL_BANDS

    n = math.ceil(size / BASE_TILE)
    lines = [f'<VRTDataset rasterXSize="{size}" rasterYSize="{height or size}">',
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
    """One run of predict_scene on a scene, then the pure network time on the same tiles, with the same network and
    runtime (the mapping network: windowed attention unless --attention tile; LiteRT or TensorFlow)."""
    from core.common.options import PredictOptions
    from core.mapping.networks import Networks, read_model, run_runtime
    from core.mapping.predict import predict_scene, resolve_tiling, window_of
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
                             runtime=args["runtime"], overwrite=True)
    t0 = time.perf_counter()
    result = predict_scene(args["scene"], str(out / "hse.tif"), str(out / "lcz.tif"), model_path=args["model"],
                           options=options, log=log)
    total = time.perf_counter() - t0
    engine = time.perf_counter() - marks["start"]
    _, peak = rss_mb()
    peak_kernel = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    size = args["size"]
    model_file, card = read_model(args["model"])
    options = resolve_tiling(options, card)
    window = window_of(options, card)
    runtime = run_runtime(options.runtime, options.device, model_file, card, window)
    networks = Networks()
    network = networks.mapping(networks.load(args["model"], runtime), window)
    layout = make_layout(size, size, options.tile_size, options.overlap, options.scheme)
    runner = networks.runner(network, runtime)
    th, tw = layout.tile_height, layout.tile_width
    n_tiles = len(layout.tiles)
    batch = options.batch_size
    n_batches = math.ceil(n_tiles / batch)
    last = n_tiles - (n_batches - 1) * batch
    pure, trace = pure_compute_seconds(runner, (batch, th, tw, 10), n_batches, last)
    startup = marks["start"] - PROCESS_START + trace    # imports, reading the card, loading, the first call's extra
    return dict(total_s=total, engine_s=engine, pure_s=pure, trace_s=trace, tiles=n_tiles, tile=f"{th}x{tw}",
                overlap=options.overlap, batch=batch, startup_s=startup, runtime=result.runtime,
                peak_mb=peak_kernel, base_mb=base_rss[0], hwm_mb=peak, km2=size * size * 1e-4,
                tensorflow_loaded="tensorflow" in sys.modules)


def child_patch(args: dict) -> dict:
    """The patch-wise peer: one centred 32 x 32 patch per 100 m cell through the So2Sat ResNet20, streamed by
    rows of cells, LCZ written at 100 m."""
    import numpy as np
    import rasterio
    import tensorflow as tf
    import keras

    from core.outputs.writer import lcz_colormap
    from core.network.inference import select_device
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
    size = args["size"]
    return dict(total_s=engine, engine_s=engine, pure_s=pure, trace_s=trace, tiles=patches_run, tile="32x32",
                peak_mb=peak_kernel, base_mb=base, hwm_mb=rss_mb()[1], km2=size * size * 1e-4)


# --- the parent: scenes, children, table ---


def run_child(kind: str, args: dict, timeout: float) -> Optional[dict]:
    """One measurement in its own process; its result, with the process's whole wall time ("process_s": start-up,
    imports and loading included) added."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(args)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        print(f"  {kind} {args['size']} px: stopped after {timeout:.0f} s", file=sys.stderr)
        return None
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return {**json.loads(line[len("RESULT "):]), "process_s": time.perf_counter() - t0}
    print(f"  {kind} {args['size']} px failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None


def time_cli(scene: Path, out: Path, rounds: int) -> tuple[float, float]:
    """(best wall time of `rounds` whole `python -m core.predict SCENE --hse --lcz` processes with no other flag, the
    peak RSS in MB of the last, from os.wait4's rusage of that process alone), as a user runs it."""
    best, peak = float("inf"), 0.0
    for _ in range(rounds):
        for f in out.glob("cli_*.tif"):
            f.unlink()
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "core.predict", str(scene), "--hse", str(out / "cli_hse.tif"),
                                 "--lcz", str(out / "cli_lcz.tif")], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"python -m core.predict {scene} failed with status {proc.returncode}")
        best = min(best, time.perf_counter() - t0)
        peak = usage.ru_maxrss / 1024
    return best, peak


ENGINE_METHODS = {"litert": ("litert", "blend"), "tensorflow": ("tensorflow", "blend"), "authors": ("auto", "authors")}


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 10980], help="scene edges in 10 m pixels")
    p.add_argument("--quick", action="store_true", help="only 512 and 1024 px scenes")
    p.add_argument("--scene", help="a real scene instead of the synthetic ones (its size is its own)")
    p.add_argument("--methods", nargs="+", default=["litert", "tensorflow", "patch"],
                   choices=[*ENGINE_METHODS, "patch"])
    p.add_argument("--cli", action="store_true",
                   help="also time whole 'python -m core.predict' processes with no flags (and a 256 px scene)")
    p.add_argument("--strip", action="store_true",
                   help="also time a whole 'python -m core.predict' on a 10980 x 1024 px strip (a full tile's width)")
    p.add_argument("--model", help="model.keras (default: the bundled model)")
    p.add_argument("--teacher", default=str(TEACHER), help="So2Sat ResNet20 .keras for the patch-wise peer")
    p.add_argument("--tile-size", type=int, help="default: the engine's for the model (core.tiling.model_tiling)")
    p.add_argument("--overlap", type=int, help="default: the engine's for the model")
    p.add_argument("--batch-size", type=int, help="default: the engine's for the tile size")
    p.add_argument("--attention", default=ATTENTIONS[0], choices=ATTENTIONS)
    p.add_argument("--patch-batch", type=int, default=256)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed to one run")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    a = parse(argv)
    if a.child:
        kind, payload = a.child
        result = (child_patch if kind == "patch" else child_engine)(json.loads(payload))
        print("RESULT " + json.dumps(result))
        return 0
    if "patch" in a.methods and not Path(a.teacher).exists():
        print(f"note: {a.teacher} not found; the patch-wise peer is skipped.", file=sys.stderr)
        a.methods = [m for m in a.methods if m != "patch"]
    work = Path(tempfile.mkdtemp(prefix="urbanmtl-bench-"))
    base = work / "base.tif"
    make_base_tile(base)
    scenes = []
    if a.scene:
        import rasterio

        with rasterio.open(a.scene) as ds:
            scenes.append((min(ds.width, ds.height), Path(a.scene)))
    for size in ([512, 1024] if a.quick else [] if a.scene else a.sizes):
        scenes.append((size, work / f"scene_{size}.vrt"))
        make_scene_vrt(base, size, scenes[-1][1])
    rows, cli = [], {}
    for size, scene in scenes:
        for method in a.methods:
            out = work / f"out_{size}_{method}"
            out.mkdir()
            runtime, scheme = ENGINE_METHODS.get(method, ("auto", "blend"))
            args = dict(scene=str(scene), size=size, out=str(out), model=a.model, teacher=a.teacher,
                        tile_size=a.tile_size, overlap=a.overlap, batch_size=a.batch_size, attention=a.attention,
                        patch_batch=a.patch_batch, device=a.device, scheme=scheme, runtime=runtime)
            print(f"running {method} on {size} x {size} px ...", file=sys.stderr, flush=True)
            res = run_child("patch" if method == "patch" else "engine", args, a.timeout)
            if res is not None:
                rows.append((size, method, res))
        if a.cli:
            cli[size] = time_cli(scene, work, 1)
    if a.strip:
        strip = work / "strip.vrt"
        make_scene_vrt(base, 10980, strip, height=1024)
        cli["10980 x 1024"] = time_cli(strip, work, 1)
    if a.cli:
        small = work / "scene_256.vrt"
        make_scene_vrt(base, 256, small)
        cli[256] = time_cli(small, work, 2)
    print_table(rows, cli, a)
    return 0


def print_table(rows: list[tuple[int, str, dict]], cli: dict, a) -> None:
    tiling = sorted({f"{r['tile']} px overlap {r['overlap']} batch {r['batch']}" for _, m, r in rows if "overlap" in r})
    flags = sorted({f for f in open("/proc/cpuinfo").read().split() if f.startswith("avx512")}) \
        if os.path.exists("/proc/cpuinfo") else []
    print(f"\nurbanmtl inference benchmark  (tiles {', '.join(tiling) or '-'}, attention {a.attention}; model "
          f"{a.model or 'bundled'}; patch batch {a.patch_batch}; device {a.device}; {os.cpu_count()} CPUs visible; "
          f"AVX-512: {' '.join(flags) or 'none'})")
    head = (f"{'size px':>8} {'method':>10} {'km2':>8} {'units':>7} {'process s':>9} {'engine s':>9} {'km2/s':>7} "
            f"{'pure s':>7} {'first s':>7} {'overhead':>8} {'start s':>7} {'base MB':>8} {'peak MB':>8}")
    print(head)
    print("-" * len(head))
    for size, method, r in rows:
        overhead = 100 * (r["engine_s"] - r["pure_s"]) / r["engine_s"]
        print(f"{size:>8} {method:>10} {r['km2']:>8.1f} {r['tiles']:>7} {r['process_s']:>9.1f} {r['engine_s']:>9.1f} "
              f"{r['km2'] / r['engine_s']:>7.2f} {r['pure_s']:>7.1f} {r['trace_s']:>7.2f} {overhead:>7.1f}% "
              f"{r.get('startup_s', 0.0):>7.2f} {r['base_mb']:>8.0f} {r['peak_mb']:>8.0f}")
    print("\nunits: tiles run (engine) or patches (patch). process s: the whole child process (imports, loading, "
          "mapping). engine s: from the first tile to the last output renamed (start-up excluded). pure s: the same "
          "network calls on pre-made batches; first s: extra cost of the first call. overhead: share of engine time "
          "not spent in network calls (reading, blending, writing). start s: process start to the first tile, plus "
          "the first call's extra. base MB: RSS before the first tile; peak MB: the RSS high-water mark.")
    for size, method, r in rows:
        if "runtime" in r:
            print(f"{size} px {method}: {r['runtime']}; TensorFlow imported: {r['tensorflow_loaded']}")
    by = {(s, m): r for s, m, r in rows}
    for size in sorted({s for s, _, _ in rows}):
        peer = by.get((size, "patch"))
        for method in ENGINE_METHODS:
            r = by.get((size, method))
            if r and peer:
                print(f"{size} px: {method} is {peer['engine_s'] / r['engine_s']:.2f}x the patch-wise peer per km2 "
                      f"(start-up left out: {r['km2'] / r['engine_s']:.2f} vs {peer['km2'] / peer['engine_s']:.2f} "
                      f"km2/s), {peer['process_s'] / r['process_s']:.2f}x as whole processes "
                      f"({r['process_s']:.1f} vs {peer['process_s']:.1f} s); peak RSS {r['peak_mb']:.0f} vs "
                      f"{peer['peak_mb']:.0f} MB")
    for size, (seconds, peak) in sorted(cli.items(), key=lambda item: str(item[0])):
        print(f"python -m core.predict, {size} px scene, no flags: {seconds:.2f} s"
              + (" (best of 2)" if size == 256 else "") + f", peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
