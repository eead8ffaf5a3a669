"""Our Table I: the paper's comparison set trained on the same data with the same budget (run by hand).

    bash bench/table1.sh                      # trains the six variants x seeds into runs/table1/<variant>_s<seed>
    .venv/bin/python bench/table1.py runs/table1

Reads each run's model_card.json (metrics on the validation split: EuroSAT patches by patch, the scene by
blocks of 2 x patch_size px; seeded, so every run validates on the same patches and blocks) and prints a
Markdown table for models/MODEL_CARD.md: per variant the mean over seeds, and the spread (max - min) where
there is more than one seed.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

ORDER = ["hse", "lcz", "mtl_equal", "mtl_learned", "mtl_learned_p2f", "mtl_no_cbam"]
LABELS = {
    "hse": "single-task HSE", "lcz": "single-task LCZ", "mtl_equal": "MTL 1:1", "mtl_learned": "MTL learned",
    "mtl_learned_p2f": "MTL learned + P2F (proposed)", "mtl_no_cbam": "MTL learned + P2F, no CBAM",
}
BUILT_SCENES = ("Residential", "Industrial")
AMBIGUOUS_SCENES = ("Highway",)


def _share(card: dict, built: bool) -> Optional[float]:
    """EuroSAT validation patches called right: built scenes called built, or natural scenes called natural."""
    scenes = card["metrics"].get("scene_labels", {})
    if "lcz" not in card["metrics"]:
        return None
    hits = n = 0.0
    for name, entry in scenes.items():
        if name in AMBIGUOUS_SCENES or (name in BUILT_SCENES) != built or "share_built" not in entry:
            continue
        right = entry["share_built"] if built else 1.0 - entry["share_built"]
        hits += right * entry["n"]
        n += entry["n"]
    return hits / n if n else None


COLUMNS: list[tuple[str, Callable[[dict], Optional[float]], int]] = [
    ("HSE MAE (pp)", lambda c: c["metrics"].get("hse", {}).get("mae_pp"), 2),
    ("HSE F1", lambda c: c["metrics"].get("hse", {}).get("f1"), 3),
    ("LCZ OA", lambda c: c["metrics"].get("lcz", {}).get("oa"), 3),
    ("Kappa", lambda c: c["metrics"].get("lcz", {}).get("kappa"), 3),
    ("AA", lambda c: c["metrics"].get("lcz", {}).get("aa"), 3),
    ("WA", lambda c: c["metrics"].get("lcz", {}).get("wa"), 3),
    ("EuroSAT built→1-10", lambda c: _share(c, True), 2),
    ("EuroSAT natural→A-G", lambda c: _share(c, False), 2),
    ("best epoch", lambda c: c["training"].get("best_epoch"), 0),
    ("epochs", lambda c: c["epochs_run"], 0),
    ("minutes", lambda c: c["training"]["seconds"] / 60, 1),
]


def _cell(values: list[Optional[float]], digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = sum(values) / len(values)
    text = f"{mean:.{digits}f}"
    if len(values) > 1 and digits:
        text += f" ± {(max(values) - min(values)) / 2:.{digits}f}"
    return text


def main(folder: str) -> None:
    runs: dict[str, list[dict]] = defaultdict(list)
    seeds: set[str] = set()
    for path in sorted(Path(folder).glob("*/model_card.json")):
        match = re.fullmatch(r"(.+)_s(\d+)", path.parent.name)
        variant = match.group(1) if match else path.parent.name
        if variant in ORDER:
            runs[variant].append(json.loads(path.read_text()))
            seeds.add(match.group(2) if match else "?")
    if not runs:
        sys.exit(f"No runs in {folder}: train them first (bench/table1.sh).")
    print(f"Seeds: {', '.join(sorted(seeds))}; cells: mean ± half the range over seeds.\n")
    print("| variant | runs | " + " | ".join(name for name, _, _ in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for variant in ORDER:
        cards = runs.get(variant, [])
        if cards:
            cells = [_cell([get(c) for c in cards], digits) for _, get, digits in COLUMNS]
            print(f"| {LABELS[variant]} | {len(cards)} | " + " | ".join(cells) + " |")
    missing = [v for v in ORDER if v not in runs]
    if missing:
        print(f"\nNot trained: {', '.join(missing)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/table1")
