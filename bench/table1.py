"""Our Table I: the paper's comparison set trained on the same data with the same budget (run by hand).

    bash bench/table1.sh            # trains the six variants with configs/bundled.yaml into runs/table1/
    .venv/bin/python bench/table1.py runs/table1

Reads each run's model_card.json (metrics on the validation split: EuroSAT patches by patch, the scene by
256 px blocks) and prints a Markdown table for models/MODEL_CARD.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["hse", "lcz", "mtl_equal", "mtl_learned", "mtl_learned_p2f", "mtl_no_cbam"]
LABELS = {
    "hse": "single-task HSE", "lcz": "single-task LCZ", "mtl_equal": "MTL 1:1", "mtl_learned": "MTL learned",
    "mtl_learned_p2f": "MTL learned + P2F (proposed)", "mtl_no_cbam": "MTL learned + P2F, no CBAM",
}
BUILT_SCENES = ("Residential", "Industrial")


def _f(value, digits=3, scale=1.0):
    return "–" if value is None else f"{value * scale:.{digits}f}"


def row(card: dict) -> str:
    m = card["metrics"]
    hse, lcz = m.get("hse", {}), m.get("lcz", {})
    scenes = m.get("scene_labels", {})
    built = [scenes[c]["share_built"] for c in BUILT_SCENES if c in scenes]
    natural = [v["share_built"] for c, v in scenes.items() if c not in BUILT_SCENES + ("Highway",)]
    return " | ".join([
        LABELS[card["variant"]], _f(hse.get("mae_pp"), 2), _f(lcz.get("oa")), _f(lcz.get("kappa")),
        _f(lcz.get("aa")), _f(lcz.get("wa")),
        _f(sum(built) / len(built)) if built and lcz else "–",
        _f(1 - sum(natural) / len(natural)) if natural and lcz else "–",
        str(card["epochs_run"]), f"{card['training']['seconds'] / 60:.1f}",
    ])


def main(folder: str) -> None:
    cards = {}
    for variant in ORDER:
        path = Path(folder) / variant / "model_card.json"
        if path.exists():
            cards[variant] = json.loads(path.read_text())
    if not cards:
        sys.exit(f"No runs in {folder}: train them first (bench/table1.sh).")
    print("| variant | HSE MAE (pp) | LCZ OA | Kappa | AA | WA | EuroSAT built→LCZ 1-10 | EuroSAT natural→LCZ A-G "
          "| epochs | minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for card in cards.values():
        print(f"| {row(card)} |")
    missing = [v for v in ORDER if v not in cards]
    if missing:
        print(f"\nNot trained: {', '.join(missing)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/table1")
