"""How fast the mapping network runs under each CPU setting of issue 26, and whether its maps stay the same.

Run by hand from the repository root, with nothing else running (each setting runs in its own child process, one
after another, so a setting that needs a fresh TensorFlow gets one):

    .venv/bin/python bench/bench_cpu_settings.py                       # speed of every setting
    .venv/bin/python bench/bench_cpu_settings.py --maps ../shared/data/cities/montpellier_20171030_S2L1C_10band.tif

Speed: the bundled model's mapping network (windowed attention) on batches of `--batch` tiles of `--tile` px,
random reflectance, timed over `--repeats` calls after two warm-up calls; the best of `--rounds` rounds.
Settings: the engine as it runs (traced call, any batch shape); a fixed batch shape in the traced call;
oneDNN off (TF_ENABLE_ONEDNN_OPTS=0); TensorFlow's thread pools (intra-op, inter-op); XLA (jit_compile);
bfloat16 compute (Keras mixed_bfloat16, outputs cast to float32). Channels-last is what the network is built
with (Keras's default), so it is the engine row itself. FLOP rates use TensorFlow's graph profiler count.

--maps: each scene is mapped by core.mapping.predict_scene at the defaults in float32 and in bfloat16; printed:
the share of 100 m cells with the same LCZ and the HSE difference (mean, 99th percentile) of the 20 m pixels.
The issue's rule to keep a setting: LCZ the same on >= 99.5 % of cells, HSE within 0.01.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = {
    # name: (environment, options of the child)
    "engine": ({}, {}),
    "fixed_shape": ({}, {"fixed": True}),
    "onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
    "threads_2_1": ({}, {"intra": 2, "inter": 1}),
    "threads_1_2": ({}, {"intra": 1, "inter": 2}),
    "xla": ({}, {"jit": True}),
    "bfloat16": ({}, {"bf16": True}),
}


def mapping_network(bf16: bool):
    """The bundled model's network as the engine maps with it (windowed attention), in float32 or bfloat16."""
    import keras

    from core.common.options import PredictOptions
    from core.mapping.networks import Networks, read_model, run_runtime
    from core.mapping.predict import window_of

    model_file, card = read_model(None)
    window = window_of(PredictOptions(), card)
    networks = Networks()
    loaded = networks.load(None, run_runtime("tensorflow", "cpu", model_file, card, window))
    if not bf16:
        return networks.mapping(loaded, window)
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        return networks.mapping(loaded, window)
    finally:
        keras.config.set_dtype_policy(old)


def traced(network, shape, fixed: bool = False, jit: bool = False):
    """The network's call as a tf.function returning float32 outputs."""
    import tensorflow as tf

    spec = tf.TensorSpec(shape if fixed else [None, None, None, shape[-1]], tf.float32)
    return tf.function(lambda x: {k: tf.cast(v, tf.float32) for k, v in network(x, training=False).items()},
                       input_signature=[spec], autograph=False, jit_compile=jit)


def child_speed(opts: dict) -> dict:
    import numpy as np
    import tensorflow as tf

    if "intra" in opts:
        tf.config.threading.set_intra_op_parallelism_threads(opts["intra"])
        tf.config.threading.set_inter_op_parallelism_threads(opts["inter"])
    shape = (opts["batch"], opts["tile"], opts["tile"], 10)
    network = mapping_network(opts.get("bf16", False))
    fn = traced(network, shape, opts.get("fixed", False), opts.get("jit", False))
    x = tf.constant(np.random.default_rng(0).uniform(0, 0.4, shape).astype(np.float32))
    t0 = time.perf_counter()
    fn(x)
    first = time.perf_counter() - t0
    fn(x)
    best = float("inf")
    for _ in range(opts["rounds"]):
        t0 = time.perf_counter()
        for _ in range(opts["repeats"]):
            out = fn(x)
            np.asarray(out["lcz"])
        best = min(best, (time.perf_counter() - t0) / opts["repeats"])
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    concrete = tf.function(lambda t: network(t, training=False), autograph=False).get_concrete_function(
        tf.TensorSpec((1,) + shape[1:], tf.float32))
    flops = profile(concrete.graph, options=ProfileOptionBuilder(
        ProfileOptionBuilder.float_operation()).with_empty_output().build()).total_float_ops * shape[0]
    return {"batch_s": best, "first_s": first, "gflops": flops / 1e9}


def child_maps(opts: dict) -> dict:
    import numpy as np
    import rasterio
    import keras

    from core.common.options import PredictOptions
    from core.mapping.networks import Networks
    from core.mapping.predict import predict_scene

    class BFloat16(Networks):
        def mapping(self, loaded, window):
            old = keras.config.dtype_policy()
            keras.config.set_dtype_policy("mixed_bfloat16")
            try:
                return super().mapping(loaded, window)
            finally:
                keras.config.set_dtype_policy(old)

        def runner(self, network, runtime):
            import tensorflow as tf

            fn = traced(network, (None, None, None, 10))

            def call(batch):
                out = fn(tf.constant(batch))
                return np.asarray(out["hse"])[..., 0], np.asarray(out["lcz"])
            return call

    out = Path(opts["out"])
    for name, networks in (("f32", Networks()), ("bf16", BFloat16())):
        predict_scene(opts["scene"], str(out / f"{name}_hse.tif"), str(out / f"{name}_lcz.tif"),
                      options=PredictOptions(overwrite=True, runtime="tensorflow"), networks=networks)
    read = lambda p: rasterio.open(out / p).read(1)  # noqa: E731
    a, b = read("f32_lcz.tif"), read("bf16_lcz.tif")
    cells = a > 0
    h1, h2 = read("f32_hse.tif"), read("bf16_hse.tif")
    d = np.abs(h1 - h2)[h1 >= 0]
    return {"cells": int(cells.sum()), "lcz_same": float((a[cells] == b[cells]).mean()),
            "hse_mean": float(d.mean()), "hse_p99": float(np.percentile(d, 99)), "hse_max": float(d.max())}


def run_child(kind: str, env: dict, opts: dict) -> Optional[dict]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(opts)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env})
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    print(f"{kind} {opts} failed:\n{proc.stderr[-1500:]}", file=sys.stderr)
    return None


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--maps", nargs="+", default=[], help="scenes to map in float32 and bfloat16 (no speed runs)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        kind, payload = a.child
        print("RESULT " + json.dumps((child_maps if kind == "maps" else child_speed)(json.loads(payload))))
        return 0
    if a.maps:
        print(f"{'scene':<44} {'cells':>6} {'LCZ same':>9} {'HSE mean':>9} {'HSE p99':>8} {'HSE max':>8}")
        for scene in a.maps:
            with tempfile.TemporaryDirectory(prefix="urbanmtl-bf16-") as out:
                r = run_child("maps", {}, {"scene": str(Path(scene).resolve()), "out": out})
            if r:
                print(f"{Path(scene).name[:44]:<44} {r['cells']:>6} {r['lcz_same']:>9.4f} {r['hse_mean']:>9.4f} "
                      f"{r['hse_p99']:>8.4f} {r['hse_max']:>8.4f}", flush=True)
        return 0
    print(f"mapping network, batches of {a.batch} x {a.tile} px, best of {a.rounds} x {a.repeats} calls, "
          f"{os.cpu_count()} CPUs")
    print(f"{'setting':<14} {'s/batch':>8} {'first s':>8} {'GFLOP/s':>8} {'vs engine':>9}")
    base = None
    for name in a.settings:
        env, extra = SETTINGS[name]
        r = run_child("speed", env, {"tile": a.tile, "batch": a.batch, "repeats": a.repeats, "rounds": a.rounds,
                                     **extra})
        if r is None:
            continue
        base = base or (r["batch_s"] if name == "engine" else None)
        ratio = f"{base / r['batch_s']:>8.2f}x" if base else f"{'':>9}"
        print(f"{name:<14} {r['batch_s']:>8.3f} {r['first_s']:>8.1f} {r['gflops'] / r['batch_s']:>8.1f} {ratio}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
