"""EuroSAT patches mapped as islands in a nodata mosaic and as a mirrored mosaic, scored against the teacher.

    .venv/bin/python bench/eurosat_mosaic.py [--model models] [--subset val|all] [--out runs/eurosat_mosaic]

The EuroSAT patches the bundled model validated on (its card's split: 36 of the 181 shared patches; `--subset
all` takes all 181) are laid out on a grid of 130 px cells, each 64 px patch at offset 30 (so its 6 x 6 full
100 m cells fall on the output's 100 m grid). Two mosaics are mapped with core.predict:
- islands: the gaps between patches are nodata (DN 0), as in a mosaic of scattered tiles;
- mirrored: each patch padded by mirroring (symmetric) to fill its cell.
Scores per full 100 m cell inside the patches, against the teacher's LCZ (its 20 m... here 10 m soft labels
averaged per cell, argmax): built/natural agreement (LCZ 1-10 vs A-G), LCZ agreement, and the same per patch
(majority of its cells) and against the EuroSAT human class (Residential/Industrial = built; Forest, crops,
pastures, water, herbaceous = natural; Highway left out). Printed, and written to OUT/scores.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EUROSAT = REPO.parent / "shared" / "data" / "eurosat" / "eurosat_s2_teacher.h5"
CELL, OFFSET, PATCH = 130, 30, 64
FULL = 6                                # full 100 m cells per axis inside a patch
BUILT_CLASSES = {"Residential", "Industrial"}
NATURAL_CLASSES = {"AnnualCrop", "Forest", "HerbaceousVegetation", "Pasture", "PermanentCrop", "River", "SeaLake"}


def _patches(subset: str, model: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(x (N,64,64,13) DN EuroSAT order, teacher probs (N,64,64,17), class names, band names)."""
    import h5py

    with h5py.File(EUROSAT) as f:
        x, probs = f["x"][:], f["lcz_prob"][:].astype(np.float32) / 255
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["class_names"]]
        classes = [names[int(i)] for i in f["eurosat_class"][:]]
        bands = [b.decode() if isinstance(b, bytes) else str(b) for b in f["x"].attrs["band_names"]] \
            if "band_names" in f["x"].attrs else None
    if subset == "val":
        card = json.loads((Path(model) / "model_card.json").read_text()) if Path(model).is_dir() else \
            json.loads((Path(model).parent / "model_card.json").read_text())
        cfg = card["training"]["config"]
        n = len(x)
        n_val = int(min(max(round(cfg["val_fraction"] * n), 1), n - 1))
        order = np.random.default_rng(cfg["split_seed"]).permutation(np.arange(n))
        keep = np.sort(order[:n_val])
        x, probs, classes = x[keep], probs[keep], [classes[i] for i in keep]
    return x, probs, classes, bands


def _mosaics(x: np.ndarray, out: Path, bands: list[str]) -> tuple[Path, Path, int]:
    import rasterio
    from rasterio.transform import from_origin

    n = len(x)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    islands = np.zeros((13, rows * CELL, cols * CELL), np.uint16)
    mirrored = np.zeros_like(islands)
    after = CELL - OFFSET - PATCH
    for k in range(n):
        r, c = (k // cols) * CELL, (k % cols) * CELL
        patch = np.maximum(x[k].transpose(2, 0, 1), 1)            # DN 0 is nodata: keep real pixels valid
        islands[:, r + OFFSET: r + OFFSET + PATCH, c + OFFSET: c + OFFSET + PATCH] = patch
        mirrored[:, r: r + CELL, c: c + CELL] = np.pad(patch, ((0, 0), (OFFSET, after), (OFFSET, after)),
                                                       mode="symmetric")
    paths = []
    for name, data in (("islands", islands), ("mirrored", mirrored)):
        path = out / f"eurosat_{name}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=13,
                           dtype="uint16", crs="EPSG:32632", transform=from_origin(500000, 5000000, 10, 10),
                           nodata=0) as dst:
            dst.write(data)
            for i, b in enumerate(bands, start=1):
                dst.set_band_description(i, b)
        paths.append(path)
    return paths[0], paths[1], cols


def _cells(lcz: np.ndarray, k: int, cols: int) -> np.ndarray:
    r, c = (k // cols) * CELL // 10 + OFFSET // 10, (k % cols) * CELL // 10 + OFFSET // 10
    return lcz[r: r + FULL, c: c + FULL]


def _teacher_cells(probs: np.ndarray) -> np.ndarray:
    p = probs[: FULL * 10, : FULL * 10].reshape(FULL, 10, FULL, 10, 17).mean(axis=(1, 3))
    return np.argmax(p, axis=-1) + 1


def score(lcz: np.ndarray, probs: np.ndarray, classes: list[str], cols: int) -> dict:
    cell_bn, cell_lcz, patch_bn, human = [], [], [], []
    for k in range(len(probs)):
        ours, teacher = _cells(lcz, k, cols), _teacher_cells(probs[k])
        ok = ours > 0
        cell_bn.extend(((ours[ok] <= 10) == (teacher[ok] <= 10)).tolist())
        cell_lcz.extend((ours[ok] == teacher[ok]).tolist())
        our_built = np.mean(ours[ok] <= 10) > 0.5
        teacher_built = np.mean(teacher <= 10) > 0.5
        patch_bn.append(our_built == teacher_built)
        if classes[k] in BUILT_CLASSES | NATURAL_CLASSES:
            human.append(our_built == (classes[k] in BUILT_CLASSES))
    return {"cells": len(cell_bn), "built_natural_cells": float(np.mean(cell_bn)), "lcz_cells": float(np.mean(cell_lcz)),
            "patches": len(patch_bn), "built_natural_patches": float(np.mean(patch_bn)),
            "human_built_natural_patches": float(np.mean(human)), "human_patches": len(human)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(REPO / "models"))
    p.add_argument("--subset", choices=["val", "all"], default="val")
    p.add_argument("--out", default=str(REPO / "runs" / "eurosat_mosaic"))
    p.add_argument("--attention", choices=["window", "tile"], help="as core.predict --attention (default: window)")
    args = p.parse_args()
    import rasterio

    from core.mapping.predict import PredictOptions, predict_scene

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, probs, classes, bands = _patches(args.subset, args.model)
    bands = bands or ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "B8A"]
    islands, mirrored, cols = _mosaics(x, out, bands)
    result = {"model": args.model, "subset": args.subset, "attention": args.attention or "window"}
    for name, path in (("islands", islands), ("mirrored", mirrored)):
        res = predict_scene(str(path), str(out / f"{name}_hse.tif"), str(out / f"{name}_lcz.tif"),
                            model_path=args.model, options=PredictOptions(overwrite=True, **(
                                {"attention": args.attention} if args.attention else {})))
        with rasterio.open(res.lcz_path) as src:
            result[name] = score(src.read(1), probs, classes, cols)
        print(f"{name:>9}: built/natural agreement with the teacher {result[name]['built_natural_cells']:.3f} "
              f"per cell ({result[name]['cells']} cells), {result[name]['built_natural_patches']:.3f} per patch "
              f"({result[name]['patches']}); LCZ agreement {result[name]['lcz_cells']:.3f}; EuroSAT human class "
              f"{result[name]['human_built_natural_patches']:.3f} ({result[name]['human_patches']} patches)")
    diff = abs(result["islands"]["built_natural_cells"] - result["mirrored"]["built_natural_cells"])
    result["islands_minus_mirrored_built_natural"] = diff
    print(f"islands vs mirrored: |difference| in built/natural agreement {diff:.4f}")
    (out / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
