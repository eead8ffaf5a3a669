"""The tables of models/MODEL_CARD.md, printed as Markdown from the figures in models/model_card.json (which
bench/bundle_model.py fills from the benches' runs), so that the card's numbers are the card file's numbers.

    .venv/bin/python bench/card_tables.py [--card models/model_card.json] [--v4-fit runs/lro/v4_fit]

Prints: the training scenes (both dates), the leave-region-out table (per fold, the model's recipe against the v4
recipe, and the mean over folds), the fit per site (both dates) with the date-to-date agreement of the model and
of the teacher (and of v4 where its --score-model run exists) and the WUDAPT Paris agreement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def scenes_table(card: dict) -> list[str]:
    rows = ["| city | scene | date | MGRS tile | CRS | km² |", "|---|---|---|---|---|---|"]
    for s in sorted(card.get("training_scenes", []), key=lambda s: (s["city"], s["date"])):
        date = str(s["date"])
        date = f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 and date.isdigit() else date
        rows.append(f"| {s['city']} | {s['scene']} | {date} | {s['mgrs_tile']} | {s['crs']} | {s['km2']} |")
    return rows


def lro_table(card: dict) -> list[str]:
    lro = card.get("leave_region_out")
    if not lro:
        return ["(no leave-region-out figures in the card)"]
    recipe, base = lro["recipe"], lro["baseline_v4_recipe"]
    rows = [f"| fold (held out) | LCZ OA, v4 recipe ({base}) / v5 recipe ({recipe}) | OA_bu | HSE MAE | built share "
            f"{base} / {recipe} / teacher | sites as stable as the teacher from date to date, {base} / {recipe} |",
            "|---|---|---|---|---|---|"]
    folds = list(lro[recipe]["folds"])
    for fold in folds + ["mean over folds"]:
        mean = fold == "mean over folds"
        b, r = ((lro[n]["mean_over_folds"] if mean else lro[n]["folds"][fold]) for n in (base, recipe))
        stable = "" if mean else " / ".join(
            f"{sum(v['model'] >= v['teacher'] for v in x['date_agreement'].values())} of {len(x['date_agreement'])}"
            for x in (b, r))
        rows.append(f"| {fold} | {b['lcz_oa']:.3f} / {r['lcz_oa']:.3f} | {b['oa_bu']:.3f} / {r['oa_bu']:.3f} | "
                    f"{b['hse_mae']:.3f} / {r['hse_mae']:.3f} | {b['built_share']:.2f} / {r['built_share']:.2f} / "
                    f"{r['built_share_teacher']:.2f} | {stable} |")
    return rows


def fit_table(card: dict, v4_fit: Path | None) -> list[str]:
    fit = card.get("training_fit")
    if not fit:
        return ["(no training-fit figures in the card)"]
    v4 = json.loads((v4_fit / "summary.json").read_text())["date_agreement"] if v4_fit else {}
    by_site: dict[str, list] = {}
    for scene in fit["scenes"]:
        by_site.setdefault(scene["site"], []).append(scene)
    agree = fit["summary"]["date_agreement"]
    rows = ["| site | LCZ OA cities / cities_date2 | OA_bu | HSE MAE | same LCZ on both dates: v5 / teacher" + (" / v4" if v4 else "")
            + " |", "|---|---|---|---|---|"]
    for site in sorted(by_site):
        s = sorted(by_site[site], key=lambda x: x["folder"])
        cell = lambda f: " / ".join(f(x) for x in s)  # noqa: E731
        a = agree.get(site)
        ours = f"{a['model']:.2f}" if a and a["model"] < a["teacher"] else f"**{a['model']:.2f}**" if a else ""
        same = (f"{ours} / {a['teacher']:.2f}" + (f" / {v4[site]['model']:.2f}" if site in v4 else "")
                if a else "-")
        rows.append(f"| {site} | {cell(lambda x: format(x['lcz']['oa'], '.3f'))} | "
                    f"{cell(lambda x: format(x['lcz']['built_natural_oa'], '.3f'))} | "
                    f"{cell(lambda x: format(x['hse']['mae'], '.3f'))} | {same} |")
    m = fit["summary"]["mean_over_folds"]
    rows.append(f"| mean over regions | {m['lcz_oa']:.3f} | {m['oa_bu']:.3f} | {m['hse_mae']:.3f} | "
                f"{fit['summary']['sites_at_or_above_teacher']} of {fit['summary']['sites']} sites >= the teacher |")
    return rows


def reference_table(card: dict) -> list[str]:
    ref = card.get("reference_agreement")
    if not ref:
        return ["(no WUDAPT figures in the card)"]
    rows = ["| scene | cells | LCZ OA model / teacher | OA_bu model / teacher | built share model / teacher / WUDAPT |",
            "|---|---|---|---|---|"]
    for r in ref["scenes"]:
        rows.append(f"| {r['scene']} | {r['cells']} | {r['model']['oa']:.3f} / {r['teacher']['oa']:.3f} | "
                    f"{r['model']['oa_bu']:.3f} / {r['teacher']['oa_bu']:.3f} | {r['model']['built_share']:.2f} / "
                    f"{r['teacher']['built_share']:.2f} / {r['wudapt_built_share']:.2f} |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--card", default=str(REPO / "models" / "model_card.json"))
    p.add_argument("--v4-fit", help="bench/leave_region_out.py --score-model folder of model v4 (date-to-date column)")
    a = p.parse_args(argv)
    card = json.loads(Path(a.card).read_text())
    for title, rows in (("Training scenes", scenes_table(card)), ("Leave-region-out", lro_table(card)),
                        ("Fit and date-to-date agreement", fit_table(card, Path(a.v4_fit) if a.v4_fit else None)),
                        ("WUDAPT Paris", reference_table(card))):
        print(f"## {title}\n")
        print("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
