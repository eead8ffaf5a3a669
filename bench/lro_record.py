"""Record the leave-region-out figures of runs/lro/<label>/<fold>/scores.json into docs/lro_study.json, the
study's committed record (runs/ is not kept): per recipe and fold, the means over the fold's scenes (LCZ OA,
OA_bu, HSE MAE, built share of the map and of the teacher), the date-to-date agreement per site and the training
time. Folds already recorded are replaced by the run's figures; folds recorded by hand (`"source"` says where
from) stay until a run replaces them. bench/bundle_model.py reads the file for the model card.

    .venv/bin/python bench/lro_record.py dates v4_short [--runs runs/lro] [--out docs/lro_study.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("labels", nargs="+", help="recipe labels of bench/leave_region_out.py runs")
    p.add_argument("--runs", default=str(REPO / "runs" / "lro"))
    p.add_argument("--out", default=str(REPO / "docs" / "lro_study.json"))
    a = p.parse_args(argv)
    out = Path(a.out)
    record = json.loads(out.read_text()) if out.exists() else {"recipes": {}}
    for label in a.labels:
        folds = record["recipes"].setdefault(label, {"folds": {}})["folds"]
        found = sorted(Path(a.runs, label).glob("*/scores.json"))
        if not found:
            raise SystemExit(f"No scored fold under {Path(a.runs, label)}: run bench/leave_region_out.py first.")
        for scores in found:
            result = json.loads(scores.read_text())
            folds[result["fold"]] = {**result["means"], "date_agreement": result["date_agreement"],
                                     "train_seconds": result.get("train_seconds"),
                                     "source": f"bench/leave_region_out.py, {date.today().isoformat()}"}
            print(f"{label} {result['fold']}: LCZ OA {result['means']['lcz_oa']:.3f}")
    out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
