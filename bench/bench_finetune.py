"""Fine-tuning from training areas as a user runs it, side by side with the LCZ Generator's random forest.

    .venv/bin/python bench/bench_finetune.py CASE [CASE ...] [--out runs/bench_finetune] [--squares 67]
        [--label NAME] [--seed 0] [-- FINETUNE ARGS]

CASE is `wudapt:SCENE` (squares drawn from the independent WUDAPT map of Paris, ../shared/data/references, over a
scene of ../shared/data/cities or cities_date2 that it covers, e.g. wudapt:paris_20161130), `teacher:SCENE`
(squares drawn where the teacher is confident, e.g. teacher:montpellier_20171030) or `remap:SCENE` (the same
with the teacher's classes translated through REMAP: a user who disagrees with the teacher). For each case:

1. Training areas as a person draws them: squares of 2 x 2 reference cells (200 m), one cell apart, whose four
   cells share one class (teacher squares: and the teacher gives that class at least CONFIDENT in each cell).
   Squares whose centre lies in the west half of the scene are the candidates for training (at most --squares,
   round-robin over the classes with at least two squares); those in the east half are kept back (all of them).
2. `python -m core.finetune` with its defaults (start: the bundled model) on the west squares, plus FINETUNE ARGS;
   it holds out 30 % of them itself and scores start model, fine-tuned model and random forest on those
   (accuracy.json, "held-out polygons").
3. The run's map (RUN/maps/lcz_final.tif: its model, trained on all west squares, as a user maps with it) and the
   random forest's (core.finetuning.forest) trained on all west squares; with the start model's map (RUN/maps/
   lcz_before.tif) and the teacher's (its 20 m probabilities averaged per 100 m cell), scored on the kept-back
   east squares (100 m cells whose centre lies inside one) and on every east-half cell the reference has a class
   for: OA, OA_bu, per-class F1, and for the squares the 95 % ranges of a bootstrap over them (within class,
   core.evaluation.accuracy). --half east swaps the halves.
Prints one block per case and writes OUT/CASE/LABEL.json; the squares are kept in OUT/CASE/ and reused.
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
DATA = REPO.parent / "shared" / "data"
WUDAPT = DATA / "references" / "paris_wudapt_lcz.tif"
SQUARE = 2          # reference cells per side of a training square (200 m)
CONFIDENT = 0.5     # teacher squares: the least probability of the square's class in each of its cells
#: remap:SCENE, a reference that disagrees with the teacher the way WUDAPT's Paris does (it calls the teacher's
#: open midrise and open high-rise compact midrise): the teacher's classes translated, many to one.
REMAP = {4: 2, 5: 2, 6: 3, 9: 6, 12: 11, 13: 14}


def scene_path(scene: str, suffix: str) -> Path:
    for folder in ("cities", "cities_date2"):
        path = DATA / folder / f"{scene}{suffix}"
        if path.exists():
            return path
    raise SystemExit(f"no {scene}{suffix} in {DATA}/cities or cities_date2")


def teacher_cells(scene: str) -> tuple[np.ndarray, np.ndarray, object, object]:
    """(codes, probability of that code) per 100 m cell of the scene's grid from the teacher's 20 m
    probabilities (0 = no data), the 100 m transform and the CRS."""
    import rasterio

    with rasterio.open(scene_path(scene, "_lcz_teacher_20m.tif")) as ds:
        probs = ds.read().astype(np.float32) / 255.0
        transform, crs = ds.transform, ds.crs
    bands, h, w = probs.shape
    h5, w5 = -(-h // 5), -(-w // 5)
    padded = np.pad(probs, ((0, 0), (0, h5 * 5 - h), (0, w5 * 5 - w)), constant_values=np.nan)
    cells = np.nanmean(padded.reshape(bands, h5, 5, w5, 5), axis=(2, 4))
    codes = cells.argmax(0).astype(np.uint8) + 1
    codes[~(cells.sum(0) > 0)] = 0
    return codes, cells.max(0), transform * transform.scale(5, 5), crs


def wudapt_cells() -> tuple[np.ndarray, object, object]:
    import rasterio

    with rasterio.open(WUDAPT) as ds:
        codes = ds.read(1).astype(np.int64)
        transform, crs = ds.transform, ds.crs
    codes = np.where(codes > 100, codes - 90, codes)
    return np.where((codes >= 1) & (codes <= 17), codes, 0).astype(np.uint8), transform, crs


def on_grid(codes: np.ndarray, transform, crs, like: Path) -> np.ndarray:
    """Reference codes brought onto the grid of the LCZ map `like` (nearest cell centre; 0 = none)."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    with rasterio.open(like) as ds:
        out = np.zeros((ds.height, ds.width), np.uint8)
        reproject(codes, out, src_transform=transform, src_crs=crs, src_nodata=0, dst_transform=ds.transform,
                  dst_crs=ds.crs, dst_nodata=0, resampling=Resampling.nearest)
    return out


def find_squares(codes: np.ndarray, conf: np.ndarray | None, inside, confident: float) -> list[tuple[int, int, int]]:
    """(code, row, col) of the upper-left cell of every homogeneous SQUARE x SQUARE block (one cell apart)
    lying wholly inside the scene (`inside(row, col)` of the block's corner cells)."""
    out = []
    step = SQUARE + 1
    for r in range(0, codes.shape[0] - SQUARE + 1, step):
        for c in range(0, codes.shape[1] - SQUARE + 1, step):
            block = codes[r:r + SQUARE, c:c + SQUARE]
            if block.min() == 0 or block.min() != block.max() or not inside(r, c):
                continue
            if conf is not None and conf[r:r + SQUARE, c:c + SQUARE].min() < confident:
                continue
            out.append((int(block[0, 0]), r, c))
    return out


def pick(candidates: list[tuple[int, int, int]], limit: int, seed: int) -> list[tuple[int, int, int]]:
    """At most `limit` squares, round-robin over the classes (rare classes kept), classes with >= 2 squares."""
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
    if path.exists():
        path.unlink()
    with fiona.open(path, "w", driver="GPKG", crs_wkt=crs.to_wkt(), schema=schema) as dst:
        for code, r, c in chosen:
            (x0, y0), (x1, y1) = transform * (c, r), transform * (c + SQUARE, r + SQUARE)
            ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
            dst.write({"geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"lcz": code}})
    return path


def prepare(case: str, out: Path, limit: int, seed: int, confident: float = CONFIDENT, half: str = "west") -> dict:
    """Draw (or reuse) the west and east squares of a case; returns the paths and the reference on the grid."""
    import rasterio

    kind, scene = case.split(":", 1)
    image = scene_path(scene, "_S2L1C_10band.tif")
    t_codes, t_conf, t_transform, crs = teacher_cells(scene)
    with rasterio.open(image) as ds:
        left, bottom, right, top = ds.bounds
    if kind == "wudapt":
        codes, transform, ref_crs = wudapt_cells()
        conf = None
    elif kind in ("teacher", "remap"):
        codes, conf, transform, ref_crs = t_codes, t_conf, t_transform, crs
        if kind == "remap":
            codes = np.array([REMAP.get(k, k) for k in range(18)], np.uint8)[codes]
    else:
        raise SystemExit(f"unknown case kind {kind!r}: use wudapt:SCENE, teacher:SCENE or remap:SCENE")

    def inside(r, c):
        (x0, y0), (x1, y1) = transform * (c, r), transform * (c + SQUARE, r + SQUARE)
        return left <= min(x0, x1) and max(x0, x1) <= right and bottom <= min(y0, y1) and max(y0, y1) <= top

    mid = (left + right) / 2
    found = find_squares(codes, conf, inside, confident)
    centre_x = lambda sq: (transform * (sq[2] + SQUARE / 2, sq[1] + SQUARE / 2))[0]  # noqa: E731
    west = pick([s for s in found if (centre_x(s) < mid) == (half == "west")], limit, seed)
    east = [s for s in found if (centre_x(s) < mid) != (half == "west")]
    folder = out / (case.replace(":", "_") + ("" if kind == "wudapt" else f"_c{confident:g}")
                    + ("" if half == "west" else "_east"))
    folder.mkdir(parents=True, exist_ok=True)
    return {"scene": scene, "image": image, "mid_x": mid, "kind": kind, "folder": folder, "half": half,
            "west": write_squares(folder / f"west{limit}.gpkg", west, transform, ref_crs),
            "east": write_squares(folder / "east.gpkg", east, transform, ref_crs),
            "n_west": len(west), "n_east": len(east), "west_classes": sorted({s[0] for s in west}),
            "reference": (codes, transform, ref_crs), "teacher": (t_codes, t_transform, crs)}


def score_codes(pred: np.ndarray, ref: np.ndarray, ids: np.ndarray, codes: list[int]) -> tuple[dict, np.ndarray]:
    """Scores of `pred` on the cells of the squares (ids > 0) and their per-square confusions."""
    from core.evaluation.accuracy import polygon_confusions, score

    per = polygon_confusions(ids, codes, pred)
    s = score(per.sum(0))
    return {k: s[k] for k in ("oa", "oa_bu", "oa_w", "kappa", "f1", "cells")}, per


def score_all(pred: np.ndarray, ref: np.ndarray, east: np.ndarray) -> dict:
    from core.evaluation.accuracy import score
    from core.evaluation.metrics import confusion_matrix

    both = east & (ref > 0) & (pred > 0)
    s = score(confusion_matrix(ref[both].astype(np.int64), pred[both].astype(np.int64)))
    return {k: s[k] for k in ("oa", "oa_bu", "kappa", "f1", "cells")}


def run_finetune(case: dict, run: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "core.finetune", "--image", str(case["image"]), "--polygons", str(case["west"]),
           "--field", "lcz", "--out", str(run), *extra]
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = run.parent / f"{run.name}.log"
    log.write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"core.finetune failed ({done.returncode}); see {log}")
    return {"wall_s": round(time.time() - started, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime, 1)}


def final_map(run: Path) -> Path:
    """The scene mapped with the run's model, as the user gets it: RUN/maps/lcz_final.tif (written by the run
    when it refits), or the tested model's map (--no-refit: it is the run's model)."""
    final = run / "maps" / "lcz_final.tif"
    return final if final.exists() else run / "maps" / "lcz_after.tif"


def forest_map(case: dict, like: Path, seed: int) -> np.ndarray:
    from core.finetuning.forest import cell_features, predict_codes, train_forest
    from core.finetuning.areas import read_training_areas

    features = cell_features(str(case["image"]))
    areas = read_training_areas(case["west"], "lcz", features.crs)
    return predict_codes(train_forest(features, areas, seed), features)


def evaluate(case: dict, run: Path, seed: int) -> dict:
    import rasterio

    from core.evaluation.accuracy import bootstrap_ranges, scoring_cells
    from core.finetuning.areas import read_training_areas

    final = final_map(run)
    with rasterio.open(final) as ds:
        crs, transform, shape = ds.crs, ds.transform, (ds.height, ds.width)
    maps = {}
    for tag, path in (("start", run / "maps" / "lcz_before.tif"), ("fine-tuned", final),
                      ("held-out run", run / "maps" / "lcz_after.tif")):
        with rasterio.open(path) as ds:
            maps[tag] = ds.read(1)
    maps["teacher"] = on_grid(*case["teacher"], final)
    maps["forest"] = forest_map(case, final, seed)
    ref = on_grid(*case["reference"], final)
    cols = np.arange(shape[1])
    xs = (transform * (cols + 0.5, np.zeros_like(cols)))[0]
    east_cells = np.broadcast_to((xs >= case["mid_x"]) == (case["half"] == "west"), shape)
    east = read_training_areas(case["east"], "lcz", crs)
    west = read_training_areas(case["west"], "lcz", crs)
    ids, _ = scoring_cells(east, west, str(final))
    codes = [a.code for a in east]
    squares, per = {}, {}
    for tag, pred in maps.items():
        squares[tag], per[tag] = score_codes(pred, ref, ids, codes)
    ranges = bootstrap_ranges(per, codes, seed=seed)
    for tag in squares:
        squares[tag]["ranges_95"] = ranges[tag]
    everywhere = {tag: score_all(pred, ref, east_cells) for tag, pred in maps.items()}
    acc = json.loads((run / "accuracy.json").read_text())
    heldout = {t: {k: acc[t][k] for k in ("oa", "oa_bu", "f1", "cells")} for t in ("before", "after", "forest")
               if t in acc}
    return {"kept_back_squares": squares, "every_east_cell": everywhere, "heldout_polygons": heldout,
            "settings": acc.get("settings"), "seconds": acc.get("seconds")}


def line(name: str, s: dict) -> str:
    r = s.get("ranges_95")
    oa = f"{s['oa']:.3f}" + (f" [{r['oa'][0]:.2f}-{r['oa'][1]:.2f}]" if r else "")
    bu = f"{s['oa_bu']:.3f}" + (f" [{r['oa_bu'][0]:.2f}-{r['oa_bu'][1]:.2f}]" if r else "")
    return f"    {name:13s} OA {oa:20s} OA_bu {bu:20s} ({s['cells']} cells)"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="+")
    p.add_argument("--out", default=str(REPO / "runs" / "bench_finetune"))
    p.add_argument("--squares", type=int, default=67, help="at most this many west squares (default 67)")
    p.add_argument("--label", default="defaults", help="name of this run's settings (default: defaults)")
    p.add_argument("--seed", type=int, default=0, help="seed of the square choice and the forest")
    p.add_argument("--half", choices=("west", "east"), default="west",
                   help="the half whose squares train (default west; the other half's are kept back)")
    p.add_argument("--confident", type=float, default=CONFIDENT, help="teacher and remap squares: the least "
                   f"probability of the square's class in each cell (default {CONFIDENT})")
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = Path(a.out)
    for name in a.cases:
        case = prepare(name, out, a.squares, a.seed, a.confident, a.half)
        run = case["folder"] / f"{a.label}_{a.squares}"
        if run.exists():
            raise SystemExit(f"{run} exists; remove it or choose another --label")
        timing = run_finetune(case, run, extra)
        result = {"case": name, "label": a.label, "args": extra, "west_squares": case["n_west"],
                  "east_squares": case["n_east"], "west_classes": case["west_classes"], **timing,
                  **evaluate(case, run, a.seed)}
        (case["folder"] / f"{a.label}_{a.squares}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"{name} [{a.label}]: {case['n_west']} west squares ({len(case['west_classes'])} classes), "
              f"{case['n_east']} east; {timing['wall_s']:.0f} s wall, {timing['cpu_s']:.0f} s CPU")
        for title, key in (("held-out polygons", "heldout_polygons"), ("kept-back squares", "kept_back_squares"),
                           ("every east cell", "every_east_cell")):
            print(f"  {title}:")
            for tag, s in result[key].items():
                print(line(tag, s))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
