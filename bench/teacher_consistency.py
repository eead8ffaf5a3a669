"""How well the teacher agrees with itself when its input is flipped or rotated: a ceiling for the student.

    .venv/bin/python bench/teacher_consistency.py [SCENE ...] [--out runs/teacher_consistency.json]

SCENE: city names or manifests of ../shared/data/cities (default: the bundled model's validation cities).
The student is trained with the 8 flips and rotations of each window and so answers nearly the same for all
eight; the teacher (the So2Sat LCZ42 ResNet20 in ../shared/teachers) was not built that way. For each scene the
teacher is run as the labels were made (../shared/data/README.md): one 32 x 32 window centred every 40 m,
bilinearly interpolated to the 20 m pixel centres (windows centred on the 40 m blocks of the 10 m grid, the
image mirrored at its border), once per dihedral transform of the windows.
Each transform's 20 m probabilities are averaged per 100 m cell and its argmax compared with that of the
untransformed teacher, as core.evaluate_maps compares a map: LCZ agreement and built/natural agreement (1-10 vs
A-G). Also scored: the untransformed run against the shared labels (how closely this reproduces them) and the
mean of the eight (an orientation-free teacher) against the untransformed one, and with --maps the student's
maps against both. With --entropy-crops, instead: on a 1.6 km crop of each scene, the teacher's entropy and the
cross-entropy of its orientation average against it (the lowest LCZ training loss an orientation-free student
can reach there). The teacher's cells are kept in OUT's folder (OUT without .json, one .npz per scene) and reused
by later runs. Run by hand; on 2 CPU cores
about a minute per 10 km² per transform.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared"
TEACHER = SHARED / "teachers" / "so2sat_lcz42_s2_resnet20.keras"
WINDOW, STEP, CELL20 = 32, 4, 5       # 10 m px; 40 m step; 100 m cell = 5 x 5 20 m px
#: core.data.augment.dihedral's transforms k = 0..7 (k % 4 quarter turns, then for k >= 4 a left-right flip).
TRANSFORMS = ["identity", "rot90", "rot180", "rot270", "flip", "rot90_flip", "rot180_flip", "rot270_flip"]


def transform(windows: np.ndarray, k: int) -> np.ndarray:
    """Dihedral transform k of windows (N, H, W, C): the training augmentation's, applied to each window."""
    from core.data.augment import dihedral

    return np.moveaxis(dihedral(np.moveaxis(windows, 0, -1), k), -1, 0)


def read_hwc(path: Path, divisor: float, window=None) -> np.ndarray:
    """A raster (or a rasterio window of it) as float32 (H, W, bands) divided by `divisor`: 1e4 for the teacher's
    input (../shared/data/README.md: DN / 10000, no offset), 255 for the shared uint8 label probabilities."""
    import rasterio

    with rasterio.open(path) as ds:
        return np.moveaxis(ds.read(window=window).astype(np.float32), 0, -1) / divisor


def teacher_grid(model, image: np.ndarray, k: int, batch: int = 512) -> np.ndarray:
    """Teacher probabilities (H20, W20, 17) on the 20 m grid of `image` (H, W, 10) reflectance, transform k."""
    h, w = image.shape[:2]
    h20, w20 = h // 2, w // 2
    # Window j of an axis: 10 m rows [4j + 2 - 16, 4j + 2 + 16), centred on the 40 m block of pixels 4j..4j+3
    # (edge coordinate 4j + 2); the image is mirrored (symmetric) at its border.
    pad = WINDOW
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    ny, nx = -(-h // STEP), -(-w // STEP)
    coarse = np.zeros((ny, nx, 17), np.float32)
    centres = [(i, j) for i in range(ny) for j in range(nx)]
    for start in range(0, len(centres), batch):
        chunk = centres[start:start + batch]
        windows = np.stack([padded[pad + STEP * i + 2 - WINDOW // 2:pad + STEP * i + 2 + WINDOW // 2,
                                   pad + STEP * j + 2 - WINDOW // 2:pad + STEP * j + 2 + WINDOW // 2]
                            for i, j in chunk])
        probs = np.asarray(model(transform(windows, k).astype(np.float32), training=False))
        coarse[tuple(np.array(chunk).T)] = probs
    # Bilinear to the 20 m pixel centres (edge coordinate 2r + 1, i.e. window index (2r - 1) / 4), edges constant.
    return _linear(_linear(coarse, h20, 0), w20, 1)


def _linear(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """`a` (window results along `axis`) linearly interpolated to the n 20 m pixel centres of that axis."""
    pos = np.clip((2 * np.arange(n) - 1) / STEP, 0, a.shape[axis] - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, a.shape[axis] - 1)
    t = (pos - lo).reshape([-1 if d == axis else 1 for d in range(a.ndim)]).astype(np.float32)
    return np.take(a, lo, axis=axis) * (1 - t) + np.take(a, hi, axis=axis) * t


def cells(probs20: np.ndarray) -> np.ndarray:
    """LCZ code (1..17) per full 100 m cell of a 20 m probability grid."""
    h, w = (probs20.shape[0] // CELL20) * CELL20, (probs20.shape[1] // CELL20) * CELL20
    p = probs20[:h, :w].reshape(h // CELL20, CELL20, w // CELL20, CELL20, 17).mean(axis=(1, 3))
    return p.argmax(-1) + 1


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from core.evaluation.maps import BUILT_MAX

    return {"oa": round(float(np.mean(a == b)), 4),
            "built_natural_oa": round(float(np.mean((a <= BUILT_MAX) == (b <= BUILT_MAX))), 4)}


def student_scores(lcz_map: Path, teacher: np.ndarray, mean8: np.ndarray) -> dict:
    """A student's LCZ map (core.predict, 100 m cells from the image's corner) against the teacher and the
    orientation-free teacher (mean of 8), on the full cells both cover."""
    import rasterio

    with rasterio.open(lcz_map) as ds:
        ours = ds.read(1).astype(np.int64)
    h, w = min(ours.shape[0], teacher.shape[0]), min(ours.shape[1], teacher.shape[1])
    ours, teacher, mean8 = ours[:h, :w], teacher[:h, :w], mean8[:h, :w]
    ok = ours > 0
    return {"map": str(lcz_map), "cells": int(ok.sum()), "vs_teacher": agreement(ours[ok], teacher[ok]),
            "vs_mean_of_8": agreement(ours[ok], mean8[ok])}


def scene(manifest: Path, model, maps: list[Path], cache: Path) -> dict:
    from core.data import load_manifest

    spec = load_manifest(manifest)
    shared = read_hwc(spec.lcz, 255)
    started = time.perf_counter()
    cached = cache / f"{spec.name}.npz"
    if cached.exists():           # the teacher's cells depend on the image alone: computed once
        saved = np.load(cached)
        codes, mean_codes = list(saved["codes"]), saved["mean_codes"]
    else:
        image = read_hwc(spec.image, 1e4)
        grids = [teacher_grid(model, image, k) for k in range(len(TRANSFORMS))]
        codes = [cells(g) for g in grids]
        mean_codes = cells(np.mean(grids, axis=0))
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cached, codes=np.stack(codes), mean_codes=mean_codes)
    h, w = codes[0].shape
    shared_codes = cells(shared[:h * CELL20, :w * CELL20])
    students = [student_scores(d / f"{spec.name}_lcz.tif", codes[0], mean_codes) for d in maps
                if (d / f"{spec.name}_lcz.tif").exists()]
    per = {TRANSFORMS[k]: agreement(codes[0], codes[k]) for k in range(1, len(TRANSFORMS))}
    return {
        "scene": spec.name, "cells": int(h * w), "seconds": round(time.perf_counter() - started, 1),
        "reproduction_vs_shared_labels": agreement(codes[0], shared_codes),
        "transforms": per,
        "transforms_mean": {m: round(float(np.mean([v[m] for v in per.values()])), 4)
                            for m in ("oa", "built_natural_oa")},
        "mean_of_8_vs_identity": agreement(codes[0], mean_codes),
        "students": students,
    }


def entropy_floor(manifest: Path, model, size: int = 160, at: int = 100) -> dict:
    """On a size x size px crop of the scene (from pixel (at, at)): the teacher's mean entropy and the mean
    cross-entropy of its orientation average against it, per 20 m pixel, 8 px (160 m) from the crop's edge left
    out. The second is the lowest LCZ training loss a student that answers alike for all 8 orientations can
    reach on these pixels; the difference is what the orientations cost."""
    from core.data import load_manifest

    spec = load_manifest(manifest)
    image = read_hwc(spec.image, 1e4, window=((at, at + size), (at, at + size)))
    grids = [teacher_grid(model, image, k) for k in range(len(TRANSFORMS))]
    inner = (slice(8, size // 2 - 8), slice(8, size // 2 - 8))
    p, q = grids[0][inner], np.mean(grids, axis=0)[inner]
    eps = 1e-7
    return {"scene": spec.name, "crop_px": [at, at, size, size],
            "teacher_entropy": round(float((-(p * np.log(np.clip(p, eps, 1))).sum(-1)).mean()), 3),
            "cross_entropy_mean_of_8": round(float((-(p * np.log(np.clip(q, eps, 1))).sum(-1)).mean()), 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenes", nargs="*", help="city names or manifests (default: the bundled validation cities)")
    p.add_argument("--maps", nargs="*", default=[], type=Path,
                   help="folders of student maps <scene>_lcz.tif (bench/compare_runs.py's <run>_maps) to score "
                        "against the teacher and the mean of its 8 orientations")
    p.add_argument("--entropy-crops", action="store_true",
                   help="instead: the teacher's entropy and the cross-entropy of its orientation average against "
                        "it on a 1.6 km crop of each scene (entropy_floor)")
    p.add_argument("--out", default=str(REPO / "runs" / "teacher_consistency.json"))
    a = p.parse_args(argv)
    import keras

    from bench.bundle_model import val_manifests
    from bench.compare_runs import val_scenes

    names = a.scenes or val_scenes(REPO / "models")
    manifests = []
    for name in names:
        path = Path(name)
        manifests += [path] if path.suffix in (".yaml", ".json") else [Path(m) for m in val_manifests([name])]
    model = keras.saving.load_model(TEACHER, compile=False)
    if a.entropy_crops:
        for manifest in manifests:
            r = entropy_floor(manifest, model)
            print(f"{r['scene']}: teacher entropy {r['teacher_entropy']:.3f}, cross-entropy of its orientation "
                  f"average against it {r['cross_entropy_mean_of_8']:.3f} (crop {r['crop_px']})", flush=True)
        return 0
    results = []
    for manifest in manifests:
        r = scene(manifest, model, a.maps, Path(a.out).with_suffix(""))
        results.append(r)
        t, s, m = r["transforms_mean"], r["reproduction_vs_shared_labels"], r["mean_of_8_vs_identity"]
        print(f"{r['scene']}: teacher vs its flipped/rotated self LCZ {t['oa']:.3f}, built/natural "
              f"{t['built_natural_oa']:.3f} (mean of 7); mean of 8 vs itself {m['oa']:.3f} / "
              f"{m['built_natural_oa']:.3f}; reproduction vs shared labels {s['oa']:.3f} / "
              f"{s['built_natural_oa']:.3f}; {r['cells']} cells, {r['seconds']} s", flush=True)
        for st in r["students"]:
            v, m8 = st["vs_teacher"], st["vs_mean_of_8"]
            print(f"  {st['map']}: vs teacher {v['oa']:.3f} / {v['built_natural_oa']:.3f}, vs mean of 8 "
                  f"{m8['oa']:.3f} / {m8['built_natural_oa']:.3f} ({st['cells']} cells)", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
