"""How many pixels of each city scene a simple cloud test would mask, and what lies under them: the measurement
behind v5's choice to train on the second dates without a cloud mask (issue 27, model card "Clouds").

    .venv/bin/python bench/cloud_test.py [--out runs/cloud_test.json]

Two tests on top-of-atmosphere reflectance (DN / 10000), per 10 m pixel, every scene of ../shared/data/cities and
cities_date2:

- bright: B2 > 0.20 and B11 > 0.15 (the data README's `cloud_share`);
- fmask-like: bright, and haze-optimised (HOT = B2 - 0.5 B4 - 0.08 > 0), white (mean absolute deviation of B2,
  B3, B4 from their mean < 0.7 of the mean) and not snow-like (B8 / B11 > 0.75), the potential-cloud-pixel part
  of Fmask (Zhu and Woodcock 2012) without its thermal and probability steps, which need bands we do not have.

For each test: the share of the scene flagged and the teacher's built share (LCZ 1-10, argmax of its 20 m
probabilities) among the flagged pixels against the scene's. A test that flags mostly pixels the teacher calls
built or bare (F) finds roofs and sand, not clouds: masking them would take real city out of training.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
from leave_region_out import DATE_FOLDERS as FOLDERS  # noqa: E402  (bench/ is on sys.path as a script)


def tests(image: np.ndarray) -> dict[str, np.ndarray]:
    """The two masks of a (10, h, w) reflectance image in the model's band order (B2 B3 B4 B5 B6 B7 B8 B8A B11 B12)."""
    b2, b3, b4, b8, b11 = image[0], image[1], image[2], image[6], image[8]
    bright = (b2 > 0.20) & (b11 > 0.15)
    mean = (b2 + b3 + b4) / 3
    whiteness = (np.abs(b2 - mean) + np.abs(b3 - mean) + np.abs(b4 - mean)) / np.maximum(mean, 1e-6)
    hot = b2 - 0.5 * b4 - 0.08
    fmask = bright & (hot > 0) & (whiteness < 0.7) & (b8 / np.maximum(b11, 1e-6) > 0.75)
    return {"bright": bright, "fmask_like": fmask}


def scene_row(manifest: Path) -> dict:
    import rasterio
    from rasterio.enums import Resampling

    stem = manifest.stem
    with rasterio.open(manifest.parent / f"{stem}_S2L1C_10band.tif") as src:
        image = src.read().astype(np.float32) / 10000
        valid = np.all(image > 0, axis=0)
        shape = (src.height, src.width)
    with rasterio.open(manifest.parent / f"{stem}_lcz_teacher_20m.tif") as src:
        probs = src.read(out_shape=(src.count, *shape), resampling=Resampling.nearest)
    teacher = probs.argmax(axis=0) + 1
    built, bare = teacher <= 10, teacher == 15
    row = {"scene": stem, "folder": manifest.parent.name, "pixels": int(valid.sum()),
           "teacher_built_share": float(built[valid].mean())}
    for name, mask in tests(image).items():
        flagged = mask & valid
        n = int(flagged.sum())
        row[name] = {"share": n / max(int(valid.sum()), 1),
                     "teacher_built_share_flagged": float(built[flagged].mean()) if n else None,
                     "teacher_bare_share_flagged": float(bare[flagged].mean()) if n else None}
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "runs" / "cloud_test.json"))
    a = p.parse_args(argv)
    rows = [scene_row(m) for folder in FOLDERS for m in sorted((DATA / folder).glob("*.yaml"))]
    if not rows:
        raise SystemExit(f"No city scenes under {DATA}: this bench needs ../shared/data beside the checkout.")
    print(f"{'scene':24s} {'folder':13s} built | bright: share, built/bare under it | fmask-like: share, built/bare")
    for r in rows:
        cells = []
        for name in ("bright", "fmask_like"):
            t = r[name]
            under = ("-" if t["teacher_built_share_flagged"] is None else
                     f"{t['teacher_built_share_flagged']:.2f}/{t['teacher_bare_share_flagged']:.2f}")
            cells.append(f"{t['share']:.3f} {under:9s}")
        print(f"{r['scene']:24s} {r['folder']:13s} {r['teacher_built_share']:.2f}  | {cells[0]} | {cells[1]}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
