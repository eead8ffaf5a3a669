"""Compare trained models on what the model card reports: the validation cities and the EuroSAT mosaic.

    .venv/bin/python bench/compare_runs.py RUN [RUN ...] [--out runs/compare]

RUN is a model (models/, a run folder of core.train). For each: its validation cities (the card's val_scenes,
whole scenes mapped by the engine and scored per 100 m cell against the teacher, core.evaluate_maps) and the
EuroSAT validation patches as islands and mirrored (bench/eurosat_mosaic.py). Prints one line per city and model,
and writes OUT/<name>.json. Run by hand (2 CPU cores: about 1 minute a model).

--training-cities also maps and scores the cities the model trained on (the other scenes of ../shared/data/
cities; about 3 more minutes a model): how closely it fits the teacher where it has seen the teacher's labels,
against which the validation cities show what it carries over to a city it has not seen.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def val_scenes(run: Path) -> list[str]:
    from core.network.files import card_path_for, resolve_model_path

    card = json.loads(card_path_for(resolve_model_path(str(run))).read_text())
    return card["training"]["config"].get("val_scenes") or []


def disagreements(manifest: str, lcz_map: Path) -> dict[str, int]:
    """Cells per (teacher class, our class) pair where one is built (1-10) and the other natural (A-G)."""
    import numpy as np
    import rasterio

    from core.data import load_manifest
    from core.evaluation.maps import reference_lcz_cells
    from core.common.lcz import LETTERS

    with rasterio.open(lcz_map) as ds:
        ref, ours = reference_lcz_cells(load_manifest(manifest), ds).astype(int), ds.read(1).astype(int)
    wrong = (ref > 0) & (ours > 0) & ((ref <= 10) != (ours <= 10))
    pairs, counts = np.unique(np.stack([ref[wrong], ours[wrong]]), axis=1, return_counts=True)
    ranked = sorted(zip(counts.tolist(), pairs.T.tolist()), reverse=True)
    return {f"{LETTERS[a - 1]}->{LETTERS[b - 1]}": n for n, (a, b) in ranked}


def training_manifests(val: list[str]) -> list[str]:
    """The city manifests of ../shared/data/cities that are not validation cities (a model trained on them)."""
    from bench.bundle_model import SHARED, val_manifests

    held = set(val_manifests(val))
    return [str(m) for m in sorted((SHARED / "cities").glob("*.yaml")) if str(m) not in held]


def compare(run: Path, out: Path, training_cities: bool = False) -> dict:
    from bench.bundle_model import val_manifests
    from core.evaluation.maps import evaluate_scenes

    manifests = val_manifests(val_scenes(run))
    maps = out / f"{run.name}_maps"
    cities = evaluate_scenes(str(run), manifests, keep_dir=str(maps))
    for city, manifest in zip(cities, manifests):
        city["built_natural_disagreements"] = disagreements(manifest, maps / f"{Path(manifest).stem}_lcz.tif")
    mosaic_dir = out / f"{run.name}_eurosat"
    subprocess.run([sys.executable, str(REPO / "bench" / "eurosat_mosaic.py"), "--model", str(run), "--out",
                    str(mosaic_dir)], check=True, capture_output=True)
    mosaic = json.loads((mosaic_dir / "scores.json").read_text())
    result = {"model": str(run), "cities": cities, "eurosat_mosaic": mosaic}
    if training_cities:
        result["training_cities"] = evaluate_scenes(str(run), training_manifests(val_scenes(run)), log=lambda _: None)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default=str(REPO / "runs" / "compare"))
    p.add_argument("--training-cities", action="store_true",
                   help="also score the cities the model trained on (how closely it fits the teacher there)")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for run in map(Path, a.runs):
        result = compare(run, out, a.training_cities)
        (out / f"{run.name}.json").write_text(json.dumps(result, indent=1) + "\n")
        for city in result["cities"]:
            lcz, hse = city["lcz"], city["hse"]
            print(f"{run.name:16s} {city['scene']:22s} LCZ OA {lcz['oa']:.3f}  built/natural "
                  f"{lcz['built_natural_oa']:.3f}  built share {lcz['built_share_map']:.2f}/"
                  f"{lcz['built_share_reference']:.2f}  HSE MAE {hse['mae']:.3f}", flush=True)
            pairs = city["built_natural_disagreements"]
            total = sum(pairs.values()) or 1
            print(f"{'':16s}   built/natural disagreements (teacher->ours), share: "
                  + ", ".join(f"{k} {v / total:.2f}" for k, v in list(pairs.items())[:4]), flush=True)
        if a.training_cities:
            for task, key, label in (("lcz", "oa", "LCZ OA"), ("lcz", "built_natural_oa", "built/natural"),
                                     ("hse", "mae", "HSE MAE")):
                values = sorted(c[task][key] for c in result["training_cities"])
                print(f"{run.name:16s} {len(values)} training cities: {label} median {values[len(values) // 2]:.3f}, "
                      f"range {values[0]:.3f}-{values[-1]:.3f}", flush=True)
        islands, mirrored = result["eurosat_mosaic"]["islands"], result["eurosat_mosaic"]["mirrored"]
        print(f"{run.name:16s} EuroSAT mosaic built/natural per cell: islands {islands['built_natural_cells']:.3f}, "
              f"mirrored {mirrored['built_natural_cells']:.3f}; human labels per patch "
              f"{islands['human_built_natural_patches']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
