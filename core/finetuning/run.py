"""finetune: fine-tune the network on LCZ training areas drawn by the user, and measure honestly whether it got
better, beside the LCZ Generator's random forest on the same areas. Its command line is core.finetune:

    python -m core.finetune --image S2.tif --polygons areas.gpkg --field lcz --out RUN \
        [--model M] [--epochs N] [--seed S] [--test-share 0.3] [--distill W] [--no-refit]

Steps: the polygons (any OGR format and CRS; classes 1-17, 1-10/A-G or 101-107) are checked against the image and
split WHOLE into train and test polygons, stratified by class (core.finetuning.areas), and written in the image CRS
(RUN/train_areas.gpkg, RUN/test_areas.gpkg; field `lcz`, codes 1..17). The image is mapped with the start model
(core.mapping.predict, the real engine) and by a random forest trained on the train polygons the LCZ Generator's way
(core.finetuning.forest). core.train then fine-tunes the start model on a scene manifest of the train polygons
(RUN/train_scene.yaml; no HSE reference) as core.finetuning.setup describes: the LCZ branch alone learns, on windows
centred on the polygons (every class alike) and anywhere in the image, with the polygons' classes as targets and
the start model's own map, translated where the polygons contradict it, everywhere else (RUN/distill_map.json).
There is no validation split: the test polygons are never used for training or for choosing a checkpoint. The
image is mapped again with the fine-tuned model, and the three 100 m LCZ maps (start, fine-tuned, forest) are
scored on the test polygons (core.evaluation.accuracy): RUN/accuracy.json and RUN/accuracy.html. With refit (the default, as
the LCZ Generator maps with all training areas) that tested model is RUN/heldout, and the run's own model is then
trained the same way on every polygon, train and test (RUN/all_areas.gpkg): the report measures the procedure,
the model uses all the user drew. --no-refit keeps the tested model as the run's model. The run's model maps the
image once more (RUN/maps/lcz_final.tif), and the report warns of every class whose training polygons that map
still calls something else in most cases.

RUN is a normal run folder (model.keras + model_card.json, with the held-out accuracy under `fine_tuning`),
usable as `core.predict --model RUN` and by the QGIS mapping algorithm; RUN/maps holds the LCZ maps of the start
model, the tested model, the forest and the run's model (lcz_before, lcz_after, lcz_forest, lcz_final .tif) and
the networks' HSE maps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..common.errors import UrbanMTLError
from .setup import (
    BATCH_SIZE, HELDOUT, LR_DECAY, LR_DECAYS, MIN_POLYGONS, NO_REFIT_STEPS, PROGRESS_STEPS, RUN_FILES, FinetuneOptions,
    Log,
    Progress, areas_manifest, auto_epochs, finetune_config, patch_size, prepare_areas, write_distill_map,
)


def _check_out(out: Path) -> None:
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held:
        raise UrbanMTLError(f"The output folder '{out}' already holds a run ({', '.join(held)}). Choose a new "
                            f"output folder.")


def map_scene(opts: FinetuneOptions, model: str, tag: str, out: Path, log: Log,
              progress: Optional[Progress] = None) -> str:
    """Map the whole image with `model` through core.predict; returns the LCZ map's path."""
    from ..mapping.predict import PredictOptions, predict_scene

    folder = out / "maps"
    folder.mkdir(exist_ok=True)
    lcz = folder / f"lcz_{tag}.tif"
    result = predict_scene(opts.image, str(folder / f"hse_{tag}.tif"), str(lcz), model_path=model,
                           options=PredictOptions(bands=opts.bands, offset=opts.offset, overwrite=True),
                           progress=progress)
    which = {"before": "start", "after": "fine-tuned", "final": "run's"}[tag]
    log(f"Mapped the image with the {which} model in {result.seconds:.1f} s.")
    return result.lcz_path


def forest_map(opts: FinetuneOptions, prepared: dict[str, Any], like: str, out: Path, log: Log) -> str:
    """The LCZ Generator's random forest (core.finetuning.forest) trained on the train polygons, mapped on the grid of the
    LCZ map `like`: RUN/maps/lcz_forest.tif, the peer the report puts beside the fine-tuned model."""
    from .forest import cell_features, predict_codes, train_forest, write_codes

    started = time.perf_counter()
    features = cell_features(opts.image, bands=opts.bands, offset=opts.offset)
    codes = predict_codes(train_forest(features, prepared["train"], opts.seed), features)
    path = write_codes(codes, like, str(out / "maps" / "lcz_forest.tif"))
    log(f"Mapped the image with a random forest on the same training areas (the LCZ Generator's method) in "
        f"{time.perf_counter() - started:.1f} s.")
    return path


def evaluate(opts: FinetuneOptions, prepared: dict[str, Any], maps: dict[str, str]) -> dict[str, Any]:
    """Score the maps (before, after, forest) on the test polygons; returns the accuracy result (one score per
    map, split, bootstrap of the gain and 95 % ranges of every map's OA, OA_bu and per-class F1)."""
    import rasterio

    from ..evaluation.accuracy import bootstrap, bootstrap_ranges, no_cells_error, polygon_confusions, score, scoring_cells

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
        result["bootstrap"]["ranges_95"] = bootstrap_ranges(per_polygon, codes, opts.bootstrap, opts.seed)
    return result


def _step(progress: Optional[Progress], share: Optional[tuple[float, float]]) -> Optional[Progress]:
    """`progress` for one step: the step's 0..100 scaled into its `share` of the run (PROGRESS_STEPS)."""
    if progress is None or share is None:
        return None
    low, high = share
    return lambda percent: progress(low + (high - low) * min(max(float(percent), 0.0), 100.0) / 100.0)


def _training_callback(progress: Optional[Progress], log: Log) -> list[Any]:
    """A Keras callback reporting training progress per batch (to `progress`, 0..100) and each epoch's loss
    (to `log`), for core.train's `callbacks`."""
    import keras

    class Report(keras.callbacks.Callback):
        _epoch, _started = 0, 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch, self._started = epoch, time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if progress is not None:
                steps, epochs = self.params.get("steps") or 1, self.params.get("epochs") or 1
                progress(100.0 * (self._epoch * steps + batch + 1) / (steps * epochs))

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("lcz_loss")
            text = (f"Epoch {epoch + 1} of {self.params.get('epochs')} done in "
                    f"{time.perf_counter() - self._started:.1f} s")
            log(text + (f", LCZ loss {float(loss):.4f}." if loss is not None else "."))

    return [Report()]


def finetune(opts: FinetuneOptions, log: Log = print, progress: Optional[Progress] = None) -> dict[str, Any]:
    """Run every step (module docstring); returns the accuracy result also written to RUN/accuracy.json.
    `progress` (optional) gets the run's progress in percent, 0..100 (PROGRESS_STEPS)."""
    from ..evaluation.accuracy import write_json, write_report
    from ..network.saving import resolve_model_path

    out = Path(opts.out)
    _check_out(out)
    if opts.epochs is not None and opts.epochs < 1:
        raise UrbanMTLError(f"--epochs must be at least 1; got {opts.epochs}.")
    if opts.distill < 0:
        raise UrbanMTLError(f"--distill must be 0 (train on the polygons alone) or a positive weight; got "
                            f"{opts.distill}.")
    start_model = str(resolve_model_path(opts.model))
    started = time.perf_counter()
    steps = PROGRESS_STEPS if opts.refit else NO_REFIT_STEPS
    prepared = prepare_areas(opts, out, log)
    log("Mapping the image with the start model ...")
    before = map_scene(opts, start_model, "before", out, log, _step(progress, steps["before"]))
    forest = forest_map(opts, prepared, before, out, log)
    patch = patch_size(prepared["grid"], start_model)
    tested = out / HELDOUT if opts.refit else out
    trained_at = time.perf_counter()
    held = _train(opts, out, "train", prepared, prepared["train"], before, start_model, patch, tested,
                  _step(progress, steps["training"]), log)
    trained = time.perf_counter()
    log("Mapping the image with the fine-tuned model ...")
    after = map_scene(opts, str(tested), "after", out, log, _step(progress, steps["after"]))
    result = evaluate(opts, prepared, {"before": before, "after": after, "forest": forest})
    scored = time.perf_counter()
    refit = None
    final_map = after
    if opts.refit:
        _drop_checkpoints(tested, log)
        areas = prepared["train"] + prepared["test"]
        refit = _train(opts, out, "all", prepared, areas, before, start_model, patch, out,
                       _step(progress, steps["refit"]), log)
        log("Mapping the image with the run's model (trained on all polygons) ...")
        final_map = map_scene(opts, str(out), "final", out, log, _step(progress, steps["final"]))
    done = time.perf_counter()
    result["warnings"] = final_warnings(opts, prepared, final_map, log)
    result["seconds"] = {"training": round(trained - trained_at, 1), "preparing": round(trained_at - started, 1),
                         "mapping_and_scoring": round(scored - trained, 1), "refit": round(done - scored, 1),
                         "total": round(done - started, 1)}
    result["settings"] = _settings(opts, start_model, held, patch, tested, refit)
    final = {key: result["after"][key] for key in ("oa", "oa_u", "oa_bu", "oa_w", "kappa")}
    final["confusion"] = result["after"]["confusion"]
    result = {**final, **result}
    write_json(result, out / "accuracy.json")
    write_report(result, out / "accuracy.html")
    _note_in_card(out, result)
    if progress is not None:
        progress(100.0)
    return result


def _train(opts: FinetuneOptions, out: Path, name: str, prepared: dict[str, Any], areas: list[Any],
           start_map: str, start_model: str, patch: int, run: Path, progress: Optional[Progress], log: Log
           ) -> dict[str, Any]:
    """Fine-tune the start model on `areas` (RUN/<name>_areas.gpkg, written here unless it is "train") into
    the run folder `run`, with the distillation's translation of `start_map` by those areas
    (RUN/distill_<name>.json); returns its polygons, epochs and windows per epoch."""
    from ..training.run import train
    from .areas import write_areas

    if name != "train":
        write_areas(areas, out / f"{name}_areas.gpkg", prepared["grid"]["crs"])
    manifests = [areas_manifest(opts, out, name)]
    distill_map = write_distill_map(out / f"distill_{name}.json", start_map, areas) if opts.distill > 0 else None
    epochs, per_epoch = auto_epochs(manifests, patch)
    epochs = opts.epochs or epochs
    what = "all" if name == "all" else "the"
    log(f"Fine-tuning {start_model} on {what} {len(areas)} training polygons for {epochs} epochs of {per_epoch} "
        f"windows of {patch} px" + (f", keeping its own map elsewhere (weight {opts.distill:g})" if distill_map
                                    else " (polygons only)") + " ...")
    train(finetune_config(opts, manifests, start_model, epochs, patch, run, distill_map),
          callbacks=_training_callback(progress, log))
    return {"polygons": len(areas), "epochs": epochs, "windows_per_epoch": per_epoch}


def disagreeing_classes(areas: list[Any], lcz_map: str) -> list[str]:
    """One sentence per class whose training polygons `lcz_map` calls something else in most cases (a polygon
    counts as called its class when most of its 100 m cells are)."""
    import rasterio

    from ..evaluation.accuracy import rasterize_areas
    from ..common.lcz import label

    with rasterio.open(lcz_map) as ds:
        mapped = ds.read(1)
    ids = rasterize_areas(areas, lcz_map)
    tally: dict[int, list[int]] = {}
    for i, area in enumerate(areas):
        cells = mapped[(ids == i + 1) & (mapped > 0)]
        if cells.size:
            tally.setdefault(area.code, []).append(int(np.mean(cells == area.code) > 0.5))
    warnings = []
    for code, hits in sorted(tally.items()):
        if sum(hits) * 2 < len(hits):
            warnings.append(
                f"the fine-tuned map still calls {len(hits) - sum(hits)} of your {len(hits)} training polygon(s) of "
                f"class {label(code)} something else. Check that they lie in places of that class, draw more of "
                f"them, or give the start model's map less weight (--distill 0.3, or 0 for the polygons alone).")
    return warnings


def final_warnings(opts: FinetuneOptions, prepared: dict, final_map: Any, log: Log) -> list[str]:
    """The report's warnings: classes whose training polygons the run's map still mostly calls otherwise (said in
    the log here), and classes of fewer than MIN_POLYGONS polygons (said in the log before training)."""
    warnings = disagreeing_classes(prepared["train"] + (prepared["test"] if opts.refit else []), final_map)
    for text in warnings:
        log(f"Warning: {text}")
    if prepared["split"].get("few_polygons"):
        warnings.append(f"Class(es) {', '.join(prepared['split']['few_polygons'])} have fewer than {MIN_POLYGONS} "
                        f"training polygons (the LCZ Generator asks for at least {MIN_POLYGONS}): their figures rest "
                        f"on very few areas.")
    return warnings


def _drop_checkpoints(run: Path, log: Log) -> None:
    """Remove the checkpoints of the held-out run once its model.keras is written and scored (about 54 MB of
    the base-width-16 model); its model, card and log stay. A fine-tuning run is never resumed."""
    from ..training.run_folder import CHECKPOINT_FILES

    freed = 0
    for name in CHECKPOINT_FILES:
        path = run / name
        if path.exists():
            freed += path.stat().st_size
            path.unlink()
    if freed:
        log(f"Removed the held-out model's training checkpoints ({freed / 1e6:.0f} MB); its model.keras stays.")


def _settings(opts: FinetuneOptions, start_model: str, held: dict[str, Any], patch: int, tested: Path,
              refit: Optional[dict[str, Any]]) -> dict[str, Any]:
    epochs = held["epochs"]
    return {"image": str(opts.image), "polygons": str(opts.polygons), "field": opts.field,
            "start_model": start_model, "model": str(Path(opts.out) / "model.keras"),
            "tested_model": str(tested / "model.keras"), "refit": refit, "epochs": epochs,
            "windows_per_epoch": held["windows_per_epoch"], "seed": opts.seed, "test_share": opts.test_share,
            "learning_rate": opts.learning_rate,
            "lr_decay": f"x{LR_DECAY} every {max(1, int(round(epochs / LR_DECAYS)))} epochs",
            "patch_size": patch, "batch_size": BATCH_SIZE, "freeze": opts.freeze, "distill": opts.distill,
            "bands": list(opts.bands) if opts.bands else None, "offset": opts.offset}


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
