"""Agreement of a model's LCZ map, and of the teacher's, with an independent LCZ map made by people: WUDAPT Paris
(../shared/data/references/paris_wudapt_lcz.tif) over the Paris and Bercy scenes of both dates.

    .venv/bin/python bench/reference_agreement.py [--model MODEL] [--label NAME] [--out runs/reference]

Each scene is mapped by the engine (core.evaluation.maps.evaluate_scenes, the defaults a user gets) and compared
per 100 m cell where WUDAPT, the map and the teacher all have a class: LCZ OA against WUDAPT, built/natural OA
(LCZ 1-10 against A-G) against WUDAPT, for the model and for the teacher, and the model's built/natural OA minus
the teacher's. Both cities are training cities of the bundled models, so this measures the map against
someone else's view of a city, not generalisation (see the reference's README). Writes OUT/NAME.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
WUDAPT = DATA / "references" / "paris_wudapt_lcz.tif"
SITES = ("paris", "bercy")
from leave_region_out import DATE_FOLDERS  # noqa: E402  (bench/ is on sys.path when run as a script)


def scores(pred: np.ndarray, ref: np.ndarray) -> dict:
    from core.evaluation.maps import BUILT_MAX

    return {"oa": float(np.mean(pred == ref)), "oa_bu": float(np.mean((pred <= BUILT_MAX) == (ref <= BUILT_MAX))),
            "built_share": float(np.mean(pred <= BUILT_MAX))}


def agreement(model: str | None, manifest: Path, maps: Path) -> dict:
    import rasterio

    from core.data import load_manifest
    from core.evaluation.maps import evaluate_scenes, reference_lcz_cells

    spec = load_manifest(manifest)
    evaluate_scenes(model, [str(manifest)], keep_dir=str(maps), log=lambda _: None)
    with rasterio.open(maps / f"{spec.name}_lcz.tif") as lcz_map:
        pred = lcz_map.read(1).astype(np.int64)
        teacher = reference_lcz_cells(spec, lcz_map)
        wudapt = reference_lcz_cells(dataclasses.replace(spec, lcz=WUDAPT, lcz_kind="codes", lcz_band=1), lcz_map)
    both = (pred > 0) & (teacher > 0) & (wudapt > 0)
    ours, theirs = scores(pred[both], wudapt[both]), scores(teacher[both], wudapt[both])
    return {"scene": spec.name, "cells": int(both.sum()), "model": ours, "teacher": theirs,
            "wudapt_built_share": scores(wudapt[both], wudapt[both])["built_share"],
            "oa_bu_minus_teacher": ours["oa_bu"] - theirs["oa_bu"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model.keras or run folder (default: the bundled model)")
    p.add_argument("--label", default="bundled")
    p.add_argument("--out", default=str(REPO / "runs" / "reference"))
    a = p.parse_args(argv)
    if not WUDAPT.exists():
        raise SystemExit(f"{WUDAPT} is missing: this bench needs ../shared/data/references beside the checkout.")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = Path(a.out)
    maps = out / a.label / "maps"
    maps.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in DATE_FOLDERS:
        for site in SITES:
            for manifest in sorted((DATA / folder).glob(f"{site}_*.yaml")):
                row = agreement(a.model, manifest, maps)
                rows.append(row)
                print(f"{row['scene']:22s} {row['cells']:5d} cells  LCZ OA model {row['model']['oa']:.3f} teacher "
                      f"{row['teacher']['oa']:.3f}  OA_bu model {row['model']['oa_bu']:.3f} teacher "
                      f"{row['teacher']['oa_bu']:.3f}  built share model {row['model']['built_share']:.2f} teacher "
                      f"{row['teacher']['built_share']:.2f} WUDAPT {row['wudapt_built_share']:.2f}", flush=True)
    mean = {f"{who}_{k}": float(np.mean([r[who][k] for r in rows]))
            for who in ("model", "teacher") for k in ("oa", "oa_bu")}
    print("mean: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    (out / f"{a.label}.json").write_text(json.dumps({"model": a.model, "scenes": rows, "mean": mean}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
