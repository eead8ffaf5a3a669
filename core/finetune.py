"""`python -m core.finetune`: fine-tune the network on LCZ training areas drawn by the user, and measure honestly
whether it got better.

    python -m core.finetune --image S2.tif --polygons areas.gpkg --field lcz --out RUN \
        [--model M] [--epochs N] [--seed S] [--test-share 0.3]

Steps: the polygons (any OGR format and CRS; classes 1-17, 1-10/A-G or 101-107) are checked against the image and
split WHOLE into train and test polygons, stratified by class (core.training_areas); the train polygons are written
in the image CRS (RUN/train_areas.gpkg, field `lcz`) with a scene manifest (RUN/train_scene.yaml; no HSE reference,
so the HSE loss is masked) and core.train fine-tunes the start model on them (training windows drawn around the
polygons, no validation split: the test polygons are never used for training or for choosing a checkpoint). The
scene is then mapped by the engine (core.predict) with the start model and with the fine-tuned one, and both 100 m
LCZ maps are scored on the test polygons (core.accuracy): RUN/accuracy.json and RUN/accuracy.html.

RUN is a normal run folder (model.keras + model_card.json), usable as `core.predict --model RUN` and by the QGIS
mapping algorithm; RUN/maps holds the two LCZ maps (lcz_before.tif, lcz_after.tif) and their HSE maps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional


from .errors import UrbanMTLError

#: Training length, measured on 2 CPU cores (see the project's report): by default the number of epochs is chosen
#: so that training sees about TRAIN_WINDOWS windows of PATCH_SIZE px, whatever the scene's size and the number of
#: polygons (an epoch is POLYGON_WINDOWS windows per training polygon, at most the scene's area in windows).
TRAIN_WINDOWS = 1600
MIN_EPOCHS, MAX_EPOCHS = 5, 200
LEARNING_RATE = 1e-3
LR_DECAY = 0.75
#: The learning rate decays this many times over the run (x LR_DECAY each time).
LR_DECAYS = 8
PATCH_SIZE = 64
BATCH_SIZE = 8
BOOTSTRAP_REPEATS = 1000
#: Files of a run folder that mean "a run is already there".
_RUN_FILES = ("model.keras", "state.json", "accuracy.json")

Log = Callable[[str], None]


@dataclass
class FinetuneOptions:
    """What to fine-tune on and where to write it; see the module docstring."""

    image: str
    polygons: str
    field: str
    out: str
    model: Optional[str] = None            # start model (model.keras or run folder); None = the bundled model
    epochs: Optional[int] = None           # None: about TRAIN_WINDOWS windows (auto_epochs)
    seed: int = 0                          # the split, the training (weights order, windows) and the bootstrap
    test_share: float = 0.3
    layer: Optional[str] = None            # one layer of a multi-layer polygon file (default: all with `field`)
    bands: Optional[list[str]] = None      # band names of the image, as core.predict --bands
    offset: Optional[float] = None         # DN offset, as core.predict --offset
    learning_rate: float = LEARNING_RATE
    bootstrap: int = BOOTSTRAP_REPEATS
    extra: dict[str, Any] = field(default_factory=dict)   # further TrainConfig keys (tests, experiments)


def _check_out(out: Path) -> None:
    held = [name for name in _RUN_FILES if (out / name).exists()]
    if held:
        raise UrbanMTLError(f"The output folder '{out}' already holds a run ({', '.join(held)}). Choose a new "
                            f"output folder.")


def _image_grid(opts: FinetuneOptions) -> dict[str, Any]:
    """CRS, bounds, transform and size of the image as the engine reads it (warped to UTM when needed)."""
    import rasterio

    from .raster import open_scene

    with open_scene(opts.image, bands=opts.bands, offset=opts.offset) as scene:
        bounds = rasterio.transform.array_bounds(scene.height, scene.width, scene.transform)
        return {"crs": scene.crs, "transform": scene.transform, "height": scene.height, "width": scene.width,
                "bounds": tuple(bounds), "name": scene.name}


def _crs_label(crs: Any) -> str:
    epsg = crs.to_epsg() if crs is not None else None
    return f"EPSG:{epsg}" if epsg else str(crs)[:60]


def prepare_areas(opts: FinetuneOptions, out: Path, log: Log) -> dict[str, Any]:
    """Read, check, split and write the training areas; returns what the later steps need."""
    from .training_areas import (check_inside, class_table, pixel_counts, read_training_areas, split_areas,
                                 write_areas)
    from .lcz import LETTERS

    grid = _image_grid(opts)
    areas = read_training_areas(opts.polygons, opts.field, grid["crs"], opts.layer)
    check_inside(areas, grid["bounds"], _crs_label(grid["crs"]))
    train, test = split_areas(areas, opts.test_share, opts.seed)
    out.mkdir(parents=True, exist_ok=True)
    write_areas(train, out / "train_areas.gpkg", grid["crs"])
    write_areas(test, out / "test_areas.gpkg", grid["crs"])
    px = pixel_counts(train, grid["transform"], grid["height"], grid["width"])
    split = {
        "by": "whole polygons, stratified by class", "seed": opts.seed, "test_share": opts.test_share,
        "n_train": len(train), "n_test": len(test),
        "train_polygons": {LETTERS[c - 1]: n for c, n in class_table(train).items()},
        "test_polygons": {LETTERS[c - 1]: n for c, n in class_table(test).items()},
        "train_pixels_10m": {LETTERS[k - 1]: int(px[k]) for k in range(1, len(px)) if px[k]},
    }
    log(f"{len(areas)} training areas in {len(split['train_polygons'])} classes: {len(train)} to train on, "
        f"{len(test)} held out for testing (whole polygons, stratified by class, seed {opts.seed}).")
    return {"grid": grid, "train": train, "test": test, "split": split}


def write_manifest(opts: FinetuneOptions, out: Path, prepared: dict[str, Any]) -> Path:
    """The scene manifest of the training polygons (image + lcz_polygons; no HSE reference). Its polygons,
    train_windows.gpkg, are the train polygons with rarer classes repeated (training_areas.oversample)."""
    import yaml

    from .training_areas import oversample, write_areas

    write_areas(oversample(prepared["train"]), out / "train_windows.gpkg", prepared["grid"]["crs"])
    keys: dict[str, Any] = {"name": "training_areas", "image": str(Path(opts.image).resolve()),
                            "lcz_polygons": "train_windows.gpkg", "lcz_attribute": "lcz"}
    if opts.bands:
        keys["bands"] = list(opts.bands)
    if opts.offset is not None:
        keys["offset"] = float(opts.offset)
    path = out / "train_scene.yaml"
    path.write_text(yaml.safe_dump(keys, sort_keys=False))
    return path


def auto_epochs(manifest: Path) -> tuple[int, int]:
    """(epochs, windows per epoch): epochs for about TRAIN_WINDOWS training windows, within MIN..MAX_EPOCHS."""
    from .data import open_datasets

    datasets = open_datasets(f"scene:{manifest}", patch_size=PATCH_SIZE)
    per_epoch = sum(len(d) for d in datasets)
    for d in datasets:
        d.close()
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(TRAIN_WINDOWS / per_epoch)))), per_epoch


def finetune_config(opts: FinetuneOptions, manifest: Path, start_model: str, epochs: int) -> Any:
    """The TrainConfig of a fine-tuning run: from the start model, a learning rate decaying LR_DECAYS times,
    no validation split (the test polygons stay unseen), no early stopping, the best checkpoint on training
    loss."""
    from .config import TrainConfig

    values = dict(
        data=[f"scene:{manifest}"], val_data=[], val_fraction=0.0, init_from=start_model,
        patch_size=PATCH_SIZE, batch_size=BATCH_SIZE, epochs=int(epochs), learning_rate=opts.learning_rate,
        lr_decay=LR_DECAY, lr_decay_every=max(1, int(round(epochs / LR_DECAYS))), patience=int(epochs) + 1,
        seed=opts.seed, out=str(opts.out),
    )
    values.update(opts.extra)
    return TrainConfig(**values)


def map_scene(opts: FinetuneOptions, model: str, tag: str, out: Path, log: Log) -> str:
    """Map the whole image with `model` through core.predict; returns the LCZ map's path."""
    from .predict import PredictOptions, predict_scene

    folder = out / "maps"
    folder.mkdir(exist_ok=True)
    lcz = folder / f"lcz_{tag}.tif"
    result = predict_scene(opts.image, str(folder / f"hse_{tag}.tif"), str(lcz), model_path=model,
                           options=PredictOptions(bands=opts.bands, offset=opts.offset, overwrite=True))
    log(f"Mapped the image with the {'start' if tag == 'before' else 'fine-tuned'} model in {result.seconds:.1f} s.")
    return result.lcz_path


def evaluate(opts: FinetuneOptions, prepared: dict[str, Any], maps: dict[str, str]) -> dict[str, Any]:
    """Score both maps on the test polygons; returns the accuracy result (before, after, split, bootstrap)."""
    import rasterio

    from .accuracy import bootstrap, no_cells_error, polygon_confusions, score, scoring_cells

    test, train = prepared["test"], prepared["train"]
    with rasterio.open(maps["after"]) as ds:
        if ds.crs != prepared["grid"]["crs"]:
            raise UrbanMTLError(f"The LCZ map {maps['after']} is in {ds.crs}, not in the image CRS; cannot score it.")
    ids, excluded = scoring_cells(test, train, maps["after"])
    if not ids.any():
        raise no_cells_error(len(test))
    codes = [a.code for a in test]
    result: dict[str, Any] = {}
    per_polygon = {}
    for tag, path in maps.items():
        with rasterio.open(path) as ds:
            prediction = ds.read(1)
        per_polygon[tag] = polygon_confusions(ids, codes, prediction)
        result[tag] = score(per_polygon[tag].sum(axis=0))
    split = dict(prepared["split"])
    split["test_cells_100m"] = dict(result["after"]["cells_per_class"])   # cells with a map value (not nodata)
    split["test_cells_excluded"] = excluded
    split["test_polygons_without_cells"] = int(sum(1 for p in range(len(test)) if not (ids == p + 1).any()))
    result["split"] = split
    if opts.bootstrap > 0:
        result["bootstrap"] = bootstrap(per_polygon["before"], per_polygon["after"], codes, opts.bootstrap,
                                        opts.seed)
    return result


def finetune(opts: FinetuneOptions, log: Log = print) -> dict[str, Any]:
    """Run every step (module docstring); returns the accuracy result also written to RUN/accuracy.json."""
    from .accuracy import write_json, write_report
    from .model import resolve_model_path
    from .train import train

    out = Path(opts.out)
    _check_out(out)
    if opts.epochs is not None and opts.epochs < 1:
        raise UrbanMTLError(f"--epochs must be at least 1; got {opts.epochs}.")
    start_model = str(resolve_model_path(opts.model))
    started = time.perf_counter()
    prepared = prepare_areas(opts, out, log)
    manifest = write_manifest(opts, out, prepared)
    epochs, per_epoch = auto_epochs(manifest)
    epochs = opts.epochs or epochs
    log(f"Fine-tuning {start_model} for {epochs} epochs of {per_epoch} windows on {prepared['split']['n_train']} "
        f"polygons ...")
    with _tolerant_loss_plot():
        train(finetune_config(opts, manifest, start_model, epochs))
    trained = time.perf_counter()
    log("Mapping the image with the start model and the fine-tuned model ...")
    maps = {"before": map_scene(opts, start_model, "before", out, log),
            "after": map_scene(opts, str(out), "after", out, log)}
    result = evaluate(opts, prepared, maps)
    done = time.perf_counter()
    result["seconds"] = {"training": round(trained - started, 1), "mapping_and_scoring": round(done - trained, 1),
                         "total": round(done - started, 1)}
    result["settings"] = _settings(opts, start_model, epochs, per_epoch)
    final = {key: result["after"][key] for key in ("oa", "oa_u", "oa_bu", "oa_w", "kappa")}
    final["confusion"] = result["after"]["confusion"]
    result = {**final, **result}
    write_json(result, out / "accuracy.json")
    write_report(result, out / "accuracy.html")
    _note_in_card(out, result)
    return result


@contextmanager
def _tolerant_loss_plot() -> Iterator[None]:
    """core.train draws loss_curve.png from log.csv after writing the model; without validation data Keras 3's
    CSVLogger fills the val_* columns with 'NA', which that plot cannot parse. Until core.train skips them, a
    failed plot is not a failed run (the model and its card are already written)."""
    from . import train as train_module

    original = train_module._plot_losses

    def plot(log: Path, png: Path) -> None:
        try:
            original(log, png)
        except ValueError:
            pass

    train_module._plot_losses = plot
    try:
        yield
    finally:
        train_module._plot_losses = original


def _settings(opts: FinetuneOptions, start_model: str, epochs: int, per_epoch: int) -> dict[str, Any]:
    return {"image": str(opts.image), "polygons": str(opts.polygons), "field": opts.field,
            "start_model": start_model, "model": str(Path(opts.out) / "model.keras"), "epochs": epochs,
            "windows_per_epoch": per_epoch, "seed": opts.seed, "test_share": opts.test_share,
            "learning_rate": opts.learning_rate,
            "lr_decay": f"x{LR_DECAY} every {max(1, int(round(epochs / LR_DECAYS)))} epochs",
            "patch_size": PATCH_SIZE, "batch_size": BATCH_SIZE}


def _note_in_card(out: Path, result: dict[str, Any]) -> None:
    """Add the held-out accuracy to the run's model card (key `fine_tuning`)."""
    card_path = out / "model_card.json"
    if not card_path.exists():
        return
    card = json.loads(card_path.read_text())
    card["fine_tuning"] = {
        "training_areas": result["settings"]["polygons"], "field": result["settings"]["field"],
        "split": {k: result["split"][k] for k in ("n_train", "n_test", "seed", "test_share")},
        "test_accuracy": {tag: {k: result[tag][k] for k in ("oa", "oa_u", "oa_bu", "oa_w", "kappa")}
                          for tag in ("before", "after")},
        "report": "accuracy.html",
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def _summary(result: dict[str, Any]) -> str:
    b, a = result["before"], result["after"]
    text = (f"OA {b['oa']:.3f} -> {a['oa']:.3f} ({a['oa'] - b['oa']:+.3f}) on {a['cells']} test cells of "
            f"{result['split']['n_test']} held-out polygons; OA_bu {b['oa_bu']:.3f} -> {a['oa_bu']:.3f}, OA_w "
            f"{b['oa_w']:.3f} -> {a['oa_w']:.3f}")
    ci = result.get("bootstrap")
    if ci:
        text += f"; gain 95 % interval {ci['oa_gain_95'][0]:+.3f} to {ci['oa_gain_95'][1]:+.3f}"
    return text + "."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.finetune",
        description="Fine-tune the urbanmtl network on LCZ training areas (polygons) drawn over a Sentinel-2 image, "
                    "then score the start and the fine-tuned model on held-out polygons (accuracy.json/.html).")
    p.add_argument("--image", required=True, help="Sentinel-2 raster (anything core.predict reads)")
    p.add_argument("--polygons", required=True, help="training areas: GeoPackage, shapefile, GeoJSON, KML, ...")
    p.add_argument("--field", required=True, help="attribute holding the class: 1-17, 1-10/A-G or 101-107")
    p.add_argument("--out", required=True, help="run folder to create (model.keras, accuracy.json, ...)")
    p.add_argument("--model", help="start model: model.keras or a run folder (default: the bundled model)")
    p.add_argument("--epochs", type=int, help=f"epochs (default: about {TRAIN_WINDOWS} training windows of "
                   f"{PATCH_SIZE} px, {MIN_EPOCHS}-{MAX_EPOCHS} epochs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the training (default 0)")
    p.add_argument("--test-share", type=float, default=0.3, help="share of each class's polygons held out for "
                   "testing (default 0.3)")
    p.add_argument("--layer", help="layer of a multi-layer polygon file (default: every layer with --field)")
    p.add_argument("--bands", nargs="+", help="Sentinel-2 name of every image band, in file order")
    p.add_argument("--offset", type=float, help="DN offset (e.g. -1000) instead of the one from the metadata")
    p.add_argument("--learning-rate", type=float, default=LEARNING_RATE,
                   help=f"Nesterov Adam learning rate (default {LEARNING_RATE:g})")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    opts = FinetuneOptions(image=args.image, polygons=args.polygons, field=args.field, out=args.out,
                           model=args.model, epochs=args.epochs, seed=args.seed, test_share=args.test_share,
                           layer=args.layer, bands=args.bands, offset=args.offset, learning_rate=args.learning_rate)
    try:
        result = finetune(opts, log=lambda text: print(text, flush=True))
    except UrbanMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_summary(result))
    print(f"Wrote {Path(args.out) / 'model.keras'}, {Path(args.out) / 'accuracy.json'} and "
          f"{Path(args.out) / 'accuracy.html'}.")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
