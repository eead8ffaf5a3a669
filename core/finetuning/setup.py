"""What a fine-tuning run (core.finetune) trains on: its options and defaults, the training areas read, checked,
split whole and written (RUN/train_areas.gpkg, RUN/test_areas.gpkg), the scene manifest of the polygons, what the
polygons say of the start model's classes (remap_matrix, the distillation's translation), the window size, the
number of epochs and the TrainConfig. Light to import: GDAL, YAML and the training code load inside the functions.

How fine-tuning follows the training areas (each choice measured with bench/bench_finetune.py, README "Train on
your own city"): only the LCZ branch learns (FREEZE: the shared features, the HSE head and every BatchNorm keep
the start model's weights, so the HSE map does not change); training windows are centred on the polygons, the
rare classes drawn more often than their share (CLASS_BALANCE), plus BACKGROUND of them anywhere in the image; on
the polygons the user's class is the target; everywhere else the start model's own LCZ probabilities are
(distillation, weight DISTILL), translated where the polygons contradict them (remap_matrix), with the user's
classes lumped together, so that the start model decides how much of each class the user did not draw stays and
the polygons decide among the user's; as far as the polygons confirm the start model (confirmed_weight), it also
keeps its split among the user's classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..common.errors import UrbanMTLError
from ..common.spec import DEFAULT_DISTILL as DISTILL, MAX_EPOCHS, MIN_EPOCHS
from ..common.spec import SIZE_MULTIPLE

#: Training windows are as large as the start model's training windows (core.tiling.training_patch: 64 px for the
#: bundled model), the window its attention pools over when it maps (core.tiling.attention_window), so the
#: fine-tuned model maps as it learned. Smaller images use the largest multiple of 8 that fits. PATCH_SIZE: for a
#: start model whose card does not say.
PATCH_SIZE = 256
#: Training length (measured on 2 CPU cores, see the project's report): by default the number of epochs is chosen
#: so that training sees about TRAIN_WINDOWS windows, whatever the scene's size and the number of polygons (an
#: epoch is POLYGON_WINDOWS windows per training polygon, at most the scene's area in windows).
TRAIN_WINDOWS = 800
LEARNING_RATE = 1e-3
LR_DECAY = 0.75
#: The learning rate decays this many times over the run (x LR_DECAY each time).
LR_DECAYS = 8
BATCH_SIZE = 8
#: Layers that keep the start model's weights (core.training.transfer.freeze_layers): "backbone" = all but the LCZ branch.
FREEZE = "backbone"
#: Weight of the distillation loss (the start model's translated map where there is no polygon) against the
#: polygons' loss; 0 trains on the polygons alone.
#: Polygons per class below which a run warns (the LCZ Generator's minimum since its version 2.4.0).
MIN_POLYGONS = 3
#: How evenly the classes of the polygons are drawn (core.data.windows.class_weights: 1 = every class alike, 0 =
#: every polygon alike): classes in proportion to the square root of their polygons. Every class alike let a
#: class the user drew rarely take over cells of a common one (measured: bench/bench_finetune.py, README).
CLASS_BALANCE = 0.5
#: Share of the training windows drawn anywhere in the image rather than around a polygon (distillation only).
BACKGROUND = 0.5
#: Refit: once the held-out test is scored, train again from the start model on every polygon (train and test),
#: as the LCZ Generator maps with all training areas; the model of the run folder is that one, and the test
#: figures are those of the same training on the train polygons only (RUN/heldout).
REFIT = True
BOOTSTRAP_REPEATS = 1000
#: Files of a run folder that mean "a run is already there".
RUN_FILES = ("model.keras", "state.json", "accuracy.json")

Log = Callable[[str], None]
Progress = Callable[[float], None]
#: Share of the run's progress (0..100) each step reports in, for a caller's progress bar (and its estimate of the
#: time left): mapping with the start model, training on the train polygons (per batch), mapping with that model,
#: training on all polygons (refit), mapping with the run's model, then the report up to 100. Without refit,
#: "training" and "after" stretch over the refit's share.
PROGRESS_STEPS = {"before": (1.0, 6.0), "training": (6.0, 46.0), "after": (46.0, 50.0), "refit": (50.0, 93.0),
                  "final": (93.0, 97.0)}
NO_REFIT_STEPS = {"before": (1.0, 8.0), "training": (8.0, 92.0), "after": (92.0, 98.0)}
#: The sub-folder of RUN holding the model trained on the train polygons only, when the run refits.
HELDOUT = "heldout"


@dataclass
class FinetuneOptions:
    """What to fine-tune on and where to write it; see core.finetune."""

    image: str
    polygons: str
    field: Optional[str]                   # the attribute holding the class; None/"": one KML folder per class
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
    refit: bool = REFIT                    # the final model trains on all polygons (see REFIT)
    distill: float = DISTILL               # weight of keeping the start model's map away from the polygons
    freeze: str = FREEZE                   # layers kept at the start model's weights
    extra: dict[str, Any] = field(default_factory=dict)   # further TrainConfig keys (tests, experiments)


def _image_grid(opts: FinetuneOptions) -> dict[str, Any]:
    """CRS, bounds, transform and size of the image as the engine reads it (warped to UTM when needed)."""
    import rasterio

    from ..inputs.scene import open_scene

    with open_scene(opts.image, bands=opts.bands, offset=opts.offset) as scene:
        bounds = rasterio.transform.array_bounds(scene.height, scene.width, scene.transform)
        return {"crs": scene.crs, "transform": scene.transform, "height": scene.height, "width": scene.width,
                "bounds": tuple(bounds), "name": scene.name}


def prepare_areas(opts: FinetuneOptions, out: Path, log: Log) -> dict[str, Any]:
    """Read, check, split and write the training areas; returns what the later steps need."""
    from .areas import (check_inside, class_names, class_table, pixel_counts, read_training_areas, split_areas,
                        write_areas)
    from ..inputs.grid import crs_label
    from ..common.lcz import LETTERS, label

    grid = _image_grid(opts)
    areas = read_training_areas(opts.polygons, opts.field, grid["crs"], opts.layer, log)
    check_inside(areas, grid["bounds"], crs_label(grid["crs"]))
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
    few = [label(code) for code, n in class_table(areas).items() if n < MIN_POLYGONS]
    if few:
        split["few_polygons"] = few
        log(f"Warning: class(es) {', '.join(few)} have fewer than {MIN_POLYGONS} polygons. The LCZ Generator asks for "
            f"at least {MIN_POLYGONS} per class (since version 2.4.0): with fewer, the held-out test of a class rests on "
            f"one polygon and the model learns it from one or two; draw more, spread over the city.")
    names = class_names(areas)
    if names:           # a WUDAPT-style file: each class as its folder named it
        split["class_names"] = names
        log("Classes from the folders: " + "; ".join(f"{k} = '{v}'" for k, v in names.items()) + ".")
    log(f"{len(areas)} training areas in {len(split['train_polygons'])} classes: {len(train)} to train on, "
        f"{len(test)} held out for testing (whole polygons, stratified by class, seed {opts.seed}).")
    return {"grid": grid, "train": train, "test": test, "split": split}


def areas_manifest(opts: FinetuneOptions, out: Path, areas: str) -> Path:
    """The scene manifest (image, no HSE reference) of the polygons in RUN/<areas>_areas.gpkg:
    RUN/<areas>_scene.yaml ("train"; "all" for the refit)."""
    import yaml

    path = out / f"{areas}_scene.yaml"
    keys = {"name": path.stem, "image": str(Path(opts.image).resolve()), "lcz_polygons": f"{areas}_areas.gpkg",
            "lcz_attribute": "lcz"}
    if opts.bands:
        keys["bands"] = list(opts.bands)
    if opts.offset is not None:
        keys["offset"] = float(opts.offset)
    path.write_text(yaml.safe_dump(keys, sort_keys=False))
    return path


def write_distill_map(path: Path, start_map: str, areas: list[Any]) -> Path:
    """The distillation's translation of the start model's classes (core.train's config `distill_map`): what
    `areas` say of the start model's map `start_map` (remap_matrix), the classes they hold, lumped, and how much
    the distillation of every class apart weighs (confirmed_weight of the start model's agreement with them)."""
    matrix, agreement = remap_matrix(start_map, areas)
    path.write_text(json.dumps({"matrix": matrix.round(4).tolist(), "lump": sorted({a.code for a in areas}),
                                "agreement": round(agreement, 4), "confirmed": round(confirmed_weight(agreement), 4)})
                    + "\n")
    return path


def confirmed_weight(agreement: float) -> float:
    """Weight of the distillation of every class apart, from the share of the polygons' cells the start model
    already maps as the user does: 0 up to CONFIRMED (the polygons teach; their classes are lumped), then rising
    as the odds that the start model is right (the polygons confirm it: it should keep its own map, splits among
    the user's classes included). 0.8 -> 1, 0.9 -> 4, 0.95 -> 10."""
    return float(CONFIRMED_SLOPE * max(0.0, agreement - CONFIRMED) / max(1.0 - agreement, 0.01))


#: The start model's agreement with the polygons (share of their cells) above which the distillation also holds
#: the split among the user's classes (confirmed_weight), and how fast that weight rises.
CONFIRMED, CONFIRMED_SLOPE = 0.7, 2.0
#: Weight, in 100 m cells, of "the start model's class stays" when the training polygons contradict a class the
#: user did not draw (remap_matrix).
REMAP_PRIOR = 10.0
#: Fewest of the polygons' cells the start model maps as a class the user drew before they can translate it.
REMAP_MIN_CELLS = 10


def remap_matrix(start_map: str, areas: list[Any], prior: float = REMAP_PRIOR) -> tuple[np.ndarray, float]:
    """(17, 17) rows: the start model's class k, columns: the user's class; what the training polygons say of
    the start model's classes. Of the polygons' 100 m cells the start model maps k:
    - k is a class the user drew: when there are at least REMAP_MIN_CELLS of them and most are of other
      classes, row k is the share of each class among them (the user contradicts the start model's k: its k
      becomes the user's classes); else k stays;
    - k is a class the user did not draw (every such cell contradicts it): row k is their class counts plus
      `prior` cells of k, normalised: a few contradicting cells move little of k, many move most of it.
    Classes the polygons say nothing about stay as they are (identity rows). Also returns the share of those
    cells the start model maps as the user does."""
    import rasterio

    from ..evaluation.accuracy import rasterize_areas
    from ..common.lcz import NUM_CLASSES

    with rasterio.open(start_map) as ds:
        start = ds.read(1).astype(np.int64)
    ids = rasterize_areas(areas, start_map)
    inside = (ids > 0) & (start > 0)
    user = np.array([a.code for a in areas])[ids[inside] - 1]
    counts = np.zeros((NUM_CLASSES, NUM_CLASSES))
    np.add.at(counts, (start[inside] - 1, user - 1), 1.0)
    drawn = {a.code - 1 for a in areas}
    matrix = np.eye(NUM_CLASSES)
    for k in range(NUM_CLASSES):
        n = counts[k].sum()
        if k in drawn and n >= REMAP_MIN_CELLS and counts[k, k] < n / 2:
            matrix[k] = counts[k] / n
        elif k not in drawn and n > 0:
            matrix[k] = (counts[k] + prior * np.eye(NUM_CLASSES)[k]) / (n + prior)
    return matrix, float(np.trace(counts) / max(counts.sum(), 1.0))


def patch_size(grid: dict[str, Any], start_model: str) -> int:
    """The start model's training window size (see PATCH_SIZE), or the largest multiple of 8 that fits an image
    smaller than that."""
    from ..network.saving import card_path_for
    from ..tiling import training_patch

    card_file = card_path_for(Path(start_model))
    tile = (training_patch(json.loads(card_file.read_text())) if card_file.exists() else None) or PATCH_SIZE
    size = min(tile, (min(grid["height"], grid["width"]) // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    if size < 64:
        raise UrbanMTLError(f"The image is {grid['width']} x {grid['height']} pixels; fine-tuning needs at least "
                            f"64 x 64 (640 m a side). Use a larger image.")
    return size


def auto_epochs(manifests: list[Path], patch: int) -> tuple[int, int]:
    """(epochs, windows per epoch): epochs for about TRAIN_WINDOWS training windows, within MIN..MAX_EPOCHS."""
    from ..data import open_datasets

    per_epoch = 0
    for manifest in manifests:
        for d in open_datasets(f"scene:{manifest}", patch_size=patch):
            per_epoch += len(d)
            d.close()
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, round(TRAIN_WINDOWS / per_epoch)))), per_epoch


def finetune_config(opts: FinetuneOptions, manifests: list[Path], start_model: str, epochs: int,
                    patch: int, out: Optional[Path] = None, distill_map: Optional[Path] = None) -> Any:
    """The TrainConfig of a fine-tuning run: from the start model, a learning rate decaying LR_DECAYS times,
    no validation split (the test polygons stay unseen), no early stopping, the best checkpoint on training
    loss; the module docstring's freezing, class-balanced windows, background windows and distillation through
    `distill_map` (write_distill_map)."""
    from ..training.config import TrainConfig

    values = dict(
        data=[f"scene:{m}" for m in manifests], val_data=[], val_fraction=0.0, init_from=start_model,
        patch_size=patch, batch_size=BATCH_SIZE, epochs=int(epochs), learning_rate=opts.learning_rate,
        lr_decay=LR_DECAY, lr_decay_every=max(1, int(round(epochs / LR_DECAYS))), patience=int(epochs) + 1,
        seed=opts.seed, out=str(out or opts.out), freeze=opts.freeze, class_balance=CLASS_BALANCE,
        distill=float(opts.distill), distill_map=str(distill_map or ""),
        background=BACKGROUND if opts.distill > 0 else 0.0,
    )
    values.update(opts.extra)
    return TrainConfig(**values)
