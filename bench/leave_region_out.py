"""Leave-region-out: how a training recipe maps cities unlike the ones it trained on, and how stable it is from date
to date. The honest estimate of "a new city" for the model card.

    .venv/bin/python bench/leave_region_out.py CONFIG --label NAME [--folds F ...] [--set KEY=VALUE ...]
        [--out runs/lro]
    .venv/bin/python bench/leave_region_out.py --score-model MODEL --label NAME [--folds F ...]   # no training

For each fold (FOLDS: the 19 sites of ../shared/data/cities and cities_date2 by region), CONFIG (a core.train
config, e.g. configs/bundled.yaml) is trained without the fold's sites, both dates (config exclude_scenes; no
validation scenes: the run keeps its last-best epoch on training loss, so the fold never steers it), with any
--set overrides (e.g. epochs=12). The fold's scenes of both dates are then mapped by the engine and scored against
the teacher per 100 m cell (core.evaluate_maps): LCZ OA, built/natural OA (OA_bu), HSE MAE, built share; and for
each site the share of 100 m cells with the same LCZ class on both dates, for the model and for the teacher (the
two dates lie on one grid for 18 sites; bercy's second date is brought onto the first's grid, nearest cell).
--score-model skips training and scores MODEL on every fold (e.g. the bundled model, which has seen most sites).

Writes OUT/NAME/FOLD/ (config, run, maps, scores.json) and OUT/NAME/summary.json, and prints per fold the mean
over its scenes and the mean over folds. A fold already scored is reused; run it in the background (2 CPU cores:
a run of configs/bundled.yaml with epochs=12 takes about 20 minutes per fold).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
DATE_FOLDERS = ("cities", "cities_date2")

#: Sites held out together: one region each (the four Paris-region crops are one metropolitan area).
FOLDS = {
    "paris_region": ["bercy", "paris", "saclay_e", "saclay_w"],
    "france": ["bordeaux", "montpellier", "nantes", "rennes"],
    "mediterranean": ["norcia", "pisa", "valencia"],
    "middle_east": ["abudhabi", "beirut", "dubai"],
    "americas": ["aguasclaras", "brasilia", "cupertino", "rio"],
    "asia": ["beihai"],
}


def manifests(site: str) -> list[Path]:
    """The site's manifests, one per date (cities/, then cities_date2/)."""
    from core.training.datasets import scene_key_matches

    found = []
    for folder in DATE_FOLDERS:
        found += [m for m in sorted((DATA / folder).glob("*.yaml")) if scene_key_matches(m.stem, [site])]
    return found


def fold_config(config: Path, fold: str, overrides: dict, path: Path) -> Path:
    """CONFIG without the fold's sites and without validation scenes, with `overrides`, written to `path`
    (dataset paths made absolute)."""
    import yaml

    from core.training.config import load_config_file

    values = load_config_file(config)
    values.update(exclude_scenes=list(FOLDS[fold]), val_scenes=[], **overrides)
    values["data"] = [str(Path(d).resolve()) for d in values.get("data", [])]
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def train(cfg: Path, run: Path) -> float:
    """Train `cfg` into `run` (skipped when its model exists); returns the seconds it took (0 when skipped)."""
    if (run / "model.keras").exists():
        return 0.0
    started = time.time()
    with open(run.parent / "train.log", "a") as log:
        done = subprocess.run([sys.executable, "-m", "core.train", "--config", str(cfg), "--out", str(run)],
                              cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"training {cfg} failed; see {run.parent / 'train.log'}")
    return time.time() - started


def date_agreement(maps: list[Path], specs: list) -> dict:
    """Share of 100 m cells with the same class on both dates, for the maps and for the teacher."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    from core.evaluation.maps import reference_lcz_cells

    ours, teacher = [], []
    with rasterio.open(maps[0]) as first:
        grid = (first.transform, first.crs, first.height, first.width)
        ours.append(first.read(1))
        teacher.append(reference_lcz_cells(specs[0], first))
        with rasterio.open(maps[1]) as second:
            onto = np.zeros((grid[2], grid[3]), np.uint8)
            reproject(second.read(1), onto, src_transform=second.transform, src_crs=second.crs, src_nodata=0,
                      dst_transform=grid[0], dst_crs=grid[1], dst_nodata=0, resampling=Resampling.nearest)
            ours.append(onto)
            # The teacher of the second date on the first date's grid: its cells from the second manifest.
            teacher.append(reference_lcz_cells(specs[1], first))
    both = (ours[0] > 0) & (ours[1] > 0) & (teacher[0] > 0) & (teacher[1] > 0)
    return {"cells": int(both.sum()), "model": float(np.mean(ours[0][both] == ours[1][both])),
            "teacher": float(np.mean(teacher[0][both] == teacher[1][both]))}


def score_fold(model: str, fold: str, folder: Path) -> dict:
    from core.data import load_manifest
    from core.evaluation.maps import evaluate_scenes

    maps = folder / "maps"
    scenes, sites = [], {}
    for site in FOLDS[fold]:
        found = manifests(site)
        scores = evaluate_scenes(model, [str(m) for m in found], keep_dir=str(maps), log=lambda _: None)
        for manifest, score in zip(found, scores):
            score.update(site=site, folder=manifest.parent.name)
            scenes.append(score)
        if len(found) == 2:
            sites[site] = date_agreement([maps / f"{m.stem}_lcz.tif" for m in found],
                                         [load_manifest(m) for m in found])
    return {"fold": fold, "model": model, "scenes": scenes, "date_agreement": sites, "means": means(scenes)}


def means(scenes: list[dict]) -> dict:
    return {"lcz_oa": float(np.mean([s["lcz"]["oa"] for s in scenes])),
            "oa_bu": float(np.mean([s["lcz"]["built_natural_oa"] for s in scenes])),
            "hse_mae": float(np.mean([s["hse"]["mae"] for s in scenes if "hse" in s])),
            "built_share": float(np.mean([s["lcz"]["built_share_map"] for s in scenes])),
            "built_share_teacher": float(np.mean([s["lcz"]["built_share_reference"] for s in scenes]))}


def summarise(results: list[dict]) -> dict:
    folds = {r["fold"]: r["means"] for r in results}
    over = {k: float(np.mean([m[k] for m in folds.values()])) for k in next(iter(folds.values()))}
    sites = {s: v for r in results for s, v in r["date_agreement"].items()}
    return {"folds": folds, "mean_over_folds": over, "date_agreement": sites,
            "sites_at_or_above_teacher": sum(v["model"] >= v["teacher"] for v in sites.values()),
            "sites": len(sites), "seconds": {r["fold"]: r.get("train_seconds") for r in results}}


def print_summary(label: str, summary: dict) -> None:
    print(f"{label}: fold             LCZ OA  OA_bu  HSE MAE  built ours/teacher")
    for fold, m in summary["folds"].items():
        print(f"  {fold:22s} {m['lcz_oa']:.3f}  {m['oa_bu']:.3f}  {m['hse_mae']:.3f}    {m['built_share']:.2f} / "
              f"{m['built_share_teacher']:.2f}")
    m = summary["mean_over_folds"]
    print(f"  {'mean over folds':22s} {m['lcz_oa']:.3f}  {m['oa_bu']:.3f}  {m['hse_mae']:.3f}    "
          f"{m['built_share']:.2f} / {m['built_share_teacher']:.2f}")
    print(f"  date-to-date: model >= teacher on {summary['sites_at_or_above_teacher']} of {summary['sites']} sites: "
          + ", ".join(f"{s} {v['model']:.2f}/{v['teacher']:.2f}" for s, v in summary["date_agreement"].items()))


def main(argv=None) -> int:
    import yaml

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", help="core.train config of the recipe (e.g. configs/bundled.yaml)")
    p.add_argument("--label", required=True, help="name of the recipe's results folder")
    p.add_argument("--folds", nargs="+", default=list(FOLDS), choices=list(FOLDS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (YAML value)")
    p.add_argument("--score-model", help="score this model on every fold instead of training")
    p.add_argument("--out", default=str(REPO / "runs" / "lro"))
    a = p.parse_args(argv)
    if not (a.config or a.score_model):
        p.error("give CONFIG, or --score-model MODEL")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in a.set)}
    root = Path(a.out) / a.label
    results = []
    for fold in a.folds:
        folder = root / fold
        folder.mkdir(parents=True, exist_ok=True)
        scores = folder / "scores.json"
        if scores.exists():
            results.append(json.loads(scores.read_text()))
            continue
        seconds = None
        model = a.score_model
        if model is None:
            cfg = fold_config(Path(a.config), fold, overrides, folder / "config.yaml")
            seconds = train(cfg, folder / "run")
            model = str(folder / "run")
        result = {**score_fold(model, fold, folder), "train_seconds": seconds}
        scores.write_text(json.dumps(result, indent=1) + "\n")
        results.append(result)
        m = result["means"]
        print(f"{a.label} {fold}: LCZ OA {m['lcz_oa']:.3f}, OA_bu {m['oa_bu']:.3f}, HSE MAE {m['hse_mae']:.3f}"
              + (f", trained in {seconds / 60:.0f} min" if seconds else ""), flush=True)
    summary = summarise(results)
    (root / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_summary(a.label, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
