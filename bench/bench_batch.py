"""Benchmark of `python -m core.batch`: N real scenes mapped on a LocalCluster of 1, 2 and 4 workers, against a
plain loop over core.mapping.predict.predict_scene in this one process. Prints one table, all figures from this run.

Run by hand from the repository root (it takes minutes; nothing else should run on the machine meanwhile):

    .venv/bin/python bench/bench_batch.py                       # 8 scenes of 512 x 512 px, 1, 2 and 4 workers
    .venv/bin/python bench/bench_batch.py --scenes 4 --workers 1 2

Scenes: centre crops of SIZE x SIZE px of the real Sentinel-2 rasters in ../shared/data/cities (those at least
that large), then of the T33UUU scene in ../shared/data/scene, written to a temporary folder. The network is the
bundled model unless --model. Every configuration starts from nothing: the batch times include starting the
cluster (worker processes importing TensorFlow, loading the model once each) and closing it, the loop time
includes importing nothing (TensorFlow is already loaded) but loading the model for every scene, as
predict_scene does. km² is the area of the maps (the 20 m HSE grids).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data"


def make_scenes(folder: Path, count: int, size: int) -> list[Path]:
    """Centre crops of size x size px of the shared cities, then tiles of the T33UUU scene."""
    import rasterio
    from rasterio.windows import Window

    sources = sorted((DATA / "cities").glob("*_S2L1C_10band.tif")) + sorted(DATA.glob("scene/*_L1C_13band.tif"))
    windows = []
    for path in sources:
        with rasterio.open(path) as ds:
            if ds.height < size or ds.width < size:
                continue
            if "cities" in path.parts:
                windows.append((path, Window((ds.width - size) // 2, (ds.height - size) // 2, size, size)))
            else:
                windows += [(path, Window(c, r, size, size)) for r in range(0, ds.height - size + 1, size)
                            for c in range(0, ds.width - size + 1, size)]
    if len(windows) < count:
        raise SystemExit(f"only {len(windows)} crops of {size} px in {DATA}; use fewer --scenes or a smaller --size")
    scenes = []
    for i, (path, window) in enumerate(windows[:count]):
        out = folder / f"{i:02d}_{path.name.split('_')[0]}.tif"
        with rasterio.open(path) as src:
            profile = src.profile.copy()
            profile.update(width=window.width, height=window.height, transform=src.window_transform(window))
            with rasterio.open(out, "w", **profile) as dst:
                dst.write(src.read(window=window))
                dst.update_tags(**src.tags())
                for b in range(1, src.count + 1):
                    dst.set_band_description(b, src.descriptions[b - 1] or "")
        scenes.append(out)
    return scenes


def run_loop(scenes: list[Path], out: Path, model: str | None) -> tuple[float, float]:
    """A plain loop over predict_scene in this process: (seconds, km²)."""
    from core.cluster.scenes import output_km2
    from core.mapping.predict import predict_scene

    start = time.perf_counter()
    for scene in scenes:
        predict_scene(str(scene), str(out / f"{scene.stem}_hse.tif"), str(out / f"{scene.stem}_lcz.tif"),
                      model_path=model)
    seconds = time.perf_counter() - start
    return seconds, sum(output_km2(str(out / f"{s.stem}_hse.tif")) for s in scenes)


def run_batch(scenes: list[Path], out: Path, model: str | None, workers: int) -> tuple[float, float, float]:
    """`python -m core.batch` (its main(), in this process) on a LocalCluster: (seconds, km², the seconds the
    scene tasks took in all, i.e. worker time spent mapping, model loading included)."""
    from core import batch

    args = [*map(str, scenes), "--out-dir", str(out), "--workers", str(workers)] + (["--model", model] if model else [])
    start = time.perf_counter()
    code = batch.main(args)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"core.batch failed (exit {code}); see {out / 'summary.csv'}")
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return seconds, sum(float(r["km2"]) for r in rows), sum(float(r["seconds"]) for r in rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=8, help="number of scenes (8)")
    p.add_argument("--size", type=int, default=512, help="scene edge in 10 m pixels (512)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="LocalCluster sizes (1 2 4)")
    p.add_argument("--model", help="model (default: the bundled one)")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from core.cluster.scenes import cpu_count

    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        root = Path(tmp)
        (root / "scenes").mkdir()
        scenes = make_scenes(root / "scenes", args.scenes, args.size)
        loop_seconds, loop_km2 = run_loop(scenes, root / "loop", args.model)
        results = [("loop over predict_scene", "-", loop_seconds, loop_km2, loop_seconds)]
        for n in args.workers:
            print(f"--- core.batch, LocalCluster of {n} worker(s)", file=sys.stderr, flush=True)
            seconds, km2, task = run_batch(scenes, root / f"batch{n}", args.model, n)
            results.append((f"core.batch --workers {n}", str(n), seconds, km2, task))
    loop_rate = results[0][3] / results[0][2]
    one = next((r for r in results if r[1] == "1"), None)
    print(f"\n{args.scenes} scenes of {args.size} x {args.size} px ({results[0][3]:.1f} km² in all), "
          f"{cpu_count()} CPU cores, model {args.model or 'bundled'}\n")
    print("| run | workers | wall s | km²/s | vs loop | vs 1 worker | km²/s per worker while mapping |")
    print("|---|---|---|---|---|---|---|")
    for name, workers, seconds, km2, task in results:
        rate = km2 / seconds
        vs_one = f"{rate / (one[3] / one[2]):.2f}x" if one and workers != "-" else ""
        print(f"| {name} | {workers} | {seconds:.1f} | {rate:.3f} | {rate / loop_rate:.2f}x | {vs_one} | "
              f"{km2 / task:.3f} |")
    print("\nwall s: from the call to the end, cluster start and close included; per worker while mapping: km² over "
          "the seconds the scene tasks (or the loop) ran, model loading included.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
