"""The realistic check of fine-tuning from training areas: train on the west half of a city, score on the east half.

    .venv/bin/python bench/bench_finetune.py CITY [CITY ...] [--out runs/bench_finetune] [--west 60] [-- FINETUNE ARGS]

CITY is a scene of ../shared/data/cities (e.g. montpellier_20171030). For each city:
1. WUDAPT-style training areas: 300 m squares (3 x 3 cells of 100 m, on the scene's 100 m grid, one cell apart)
   where at least 8 of the 9 cells have the same teacher class (the teacher's 20 m probabilities averaged per 100 m
   cell, argmax), as a person draws training areas in homogeneous places. Squares whose centre lies in the west half
   of the scene are candidates for training (at most --west, spread over the classes: round-robin by class, each class
   with at least 2 squares), those in the east half are the test squares (all of them).
2. `python -m core.finetune` with its defaults (start: the bundled model) on the west squares; it holds out 30 % of
   them itself (accuracy.json) and maps the scene before and after.
3. The scene mapped with the run's model (RUN/model.keras: with refit, the default, trained on all west squares;
   RUN/maps/lcz_final.tif), as a user maps with it. That map, the start model's (lcz_before.tif) and the held-out
   run's (lcz_after.tif: trained on 70 % of the west squares) scored on the east squares, per 100 m cell inside a
   square (core.accuracy): OA before -> final, built/natural OA, kappa; the gain is what fine-tuning buys on areas
   it never saw. Also the run's wall time and CPU time.
Prints one line per city and writes OUT/<city>.json and OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CITIES = REPO.parent / "shared" / "data" / "cities"
SQUARE = 3          # cells of 100 m per side
AGREE = 8           # of the SQUARE**2 cells share the square's class


def teacher_cells(city: str) -> tuple[np.ndarray, object, object]:
    """(codes per 100 m cell (0 = no data), the 100 m transform, CRS) from the teacher's 20 m probabilities."""
    import rasterio

    with rasterio.open(CITIES / f"{city}_lcz_teacher_20m.tif") as ds:
        probs = ds.read().astype(np.float32)
        transform, crs = ds.transform, ds.crs
    bands, h, w = probs.shape
    h5, w5 = h // 5, w // 5
    cells = probs[:, :h5 * 5, :w5 * 5].reshape(bands, h5, 5, w5, 5).mean(axis=(2, 4))
    codes = cells.argmax(0).astype(np.uint8) + 1
    codes[cells.sum(0) <= 0] = 0
    return codes, transform * transform.scale(5, 5), crs


def squares(codes: np.ndarray) -> list[tuple[int, int, int]]:
    """(code, row, col) of the upper-left cell of every homogeneous SQUARE x SQUARE block, on a grid with one cell
    between blocks."""
    out = []
    step = SQUARE + 1
    for r in range(0, codes.shape[0] - SQUARE + 1, step):
        for c in range(0, codes.shape[1] - SQUARE + 1, step):
            block = codes[r:r + SQUARE, c:c + SQUARE].ravel()
            values, counts = np.unique(block[block > 0], return_counts=True)
            if len(values) and counts.max() >= AGREE:
                out.append((int(values[counts.argmax()]), r, c))
    return out


def pick_west(candidates: list[tuple[int, int, int]], limit: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """At most `limit` squares, round-robin over the classes (so rare classes are kept), classes with >= 2 only."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list] = defaultdict(list)
    for sq in candidates:
        by_class[sq[0]].append(sq)
    for code in by_class:
        rng.shuffle(by_class[code])
    by_class = {k: v for k, v in by_class.items() if len(v) >= 2}
    picked: list = []
    while len(picked) < limit and any(by_class.values()):
        for code in sorted(by_class):
            if by_class[code] and len(picked) < limit:
                picked.append(by_class[code].pop())
    return picked


def write_squares(path: Path, chosen: list[tuple[int, int, int]], transform, crs) -> Path:
    import fiona

    schema = {"geometry": "Polygon", "properties": {"lcz": "int"}}
    with fiona.open(path, "w", driver="GPKG", crs_wkt=crs.to_wkt(), schema=schema) as dst:
        for code, r, c in chosen:
            (x0, y0), (x1, y1) = transform * (c, r), transform * (c + SQUARE, r + SQUARE)
            ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
            dst.write({"geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"lcz": code}})
    return path


def score(lcz_map: Path, test: Path) -> dict:
    from core.accuracy import polygon_confusions, score as score_confusion, scoring_cells
    from core.training_areas import read_training_areas
    import rasterio

    with rasterio.open(lcz_map) as ds:
        pred, crs = ds.read(1), ds.crs
    areas = read_training_areas(test, "lcz", crs)
    ids, _ = scoring_cells(areas, [], str(lcz_map))
    s = score_confusion(polygon_confusions(ids, [a.code for a in areas], pred).sum(0))
    return {k: s[k] for k in ("oa", "oa_u", "oa_bu", "oa_w", "kappa", "cells")} | {"squares": len(areas)}


def map_with(run: Path, city: str) -> Path:
    """The scene mapped with the run's own model (RUN/model.keras), as the user maps with it."""
    from core.predict import PredictOptions, predict_scene

    lcz = run / "maps" / "lcz_final.tif"
    predict_scene(str(CITIES / f"{city}_S2L1C_10band.tif"), str(run / "maps" / "hse_final.tif"), str(lcz),
                  model_path=str(run / "model.keras"), options=PredictOptions(overwrite=True))
    return lcz


def run_city(city: str, out: Path, west_limit: int, extra: list[str]) -> dict:
    codes, transform, crs = teacher_cells(city)
    mid = codes.shape[1] / 2
    found = squares(codes)
    west = pick_west([s for s in found if s[2] + SQUARE / 2 < mid], west_limit)
    east = [s for s in found if s[2] + SQUARE / 2 >= mid]
    folder = out / city
    folder.mkdir(parents=True, exist_ok=True)
    west_path = write_squares(folder / "west.gpkg", west, transform, crs)
    east_path = write_squares(folder / "east.gpkg", east, transform, crs)
    run = folder / "run"
    cmd = [sys.executable, "-m", "core.finetune", "--image", str(CITIES / f"{city}_S2L1C_10band.tif"),
           "--polygons", str(west_path), "--field", "lcz", "--out", str(run), *extra]
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    (folder / "finetune.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"{city}: core.finetune failed ({done.returncode}); see {folder / 'finetune.log'}")
    final = map_with(run, city)
    acc = json.loads((run / "accuracy.json").read_text())
    result = {
        "city": city, "west_squares": len(west), "east_squares": len(east),
        "west_classes": sorted({s[0] for s in west}), "east_classes": sorted({s[0] for s in east}),
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime, 1),
        "epochs": acc["settings"]["epochs"], "windows_per_epoch": acc["settings"]["windows_per_epoch"],
        "heldout_west": {t: {k: acc[t][k] for k in ("oa", "oa_bu", "kappa", "cells")} for t in ("before", "after")},
        "east": {t: score(run / "maps" / f"lcz_{t}.tif", east_path) for t in ("before", "after")}
        | {"final": score(final, east_path)},
    }
    (out / f"{city}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cities", nargs="+")
    p.add_argument("--out", default=str(REPO / "runs" / "bench_finetune"))
    p.add_argument("--west", type=int, default=60, help="at most this many training squares (default 60)")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows = []
    for city in a.cities:
        r = run_city(city, out, a.west, extra)
        rows.append(r)
        e = r["east"]
        print(f"{city}: {r['west_squares']} west squares ({len(r['west_classes'])} classes), {r['east_squares']} "
              f"east; {r['epochs']} epochs, {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU; east OA "
              f"{e['before']['oa']:.3f} -> {e['final']['oa']:.3f} ({e['final']['oa'] - e['before']['oa']:+.3f}; "
              f"held-out run {e['after']['oa']:.3f}), built/natural {e['before']['oa_bu']:.3f} -> "
              f"{e['final']['oa_bu']:.3f}, kappa {e['before']['kappa']:.3f} -> {e['final']['kappa']:.3f}", flush=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
