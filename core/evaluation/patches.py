"""Score a trained model on labelled data: the paper's HSE and LCZ metrics as JSON, plus a confusion-matrix PNG.

Command line (core.evaluate):
    python -m core.evaluate --model RUN_DIR_or_MODEL --data DATASET [DATASET ...] --out METRICS.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..common.atomic import atomic_write
from ..common.errors import UrbanMTLError
from .metrics import MetricAccumulator, plot_confusion_matrix
from .scene_labels import SceneLabelTally

#: Suffix that turns METRICS.json into the default confusion-matrix figure, METRICS_confusion.png.
CONFUSION_SUFFIX = "_confusion.png"
SUBSETS = ("all", "train", "val")   # what --subset scores: every patch, or one part of core.train's split
DEFAULT_PATCH_SIZE = 128   # scene tile size for evaluation when neither the caller nor a training card gives one


def evaluate(
    model: str | os.PathLike | None,
    data: Sequence[str] | str,
    *,
    batch_size: int = 8,
    patch_size: Optional[int] = None,
    hse_threshold: float = 0.5,
    out: str | os.PathLike | None = None,
    confusion_png: str | os.PathLike | None = None,
    progress: bool = True,
    subset: str = "all",
    val_fraction: Optional[float] = None,
    split_seed: Optional[int] = None,
) -> dict[str, Any]:
    """Run `model` over every patch/tile of `data` once and score it against the references.

    model: a .keras file, a training run folder, or None for the bundled model.
    data: dataset specs as core.data.open_datasets accepts them (a path or "FORMAT:PATH").
    patch_size: tile size in 10 m pixels for scene datasets (multiple of 8); patch files keep their own size.
    None = the training patch size from the model card with a "val"/"train" subset, else DEFAULT_PATCH_SIZE.
    hse_threshold: built = HSE >= threshold for the binary HSE scores (fraction 0..1).
    out: where to write the JSON (None = do not write). confusion_png: where to draw the LCZ confusion
    matrix (None = do not draw; nothing is drawn without an LCZ result).
    subset: "all" (every patch), or "val" / "train": the validation or training part of each dataset as
    core.train splits it (by patch, or by blocks of 2 x patch_size px for scenes). val_fraction and split_seed
    default to the values in the model card's training settings, so "val" scores exactly the patches and
    areas the model was validated on. The scene blocks depend on the patch size: a patch_size other than the
    card's training one is refused with a subset, as its blocks would mix training and validation areas.

    Returns {"hse": {...}, "lcz": {...}, "model": path, "data": [per-dataset description and metrics],
    "n_batches": int, "scene_labels": {...}}; "hse"/"lcz" only where the model predicts the task and the data has
    a reference for it; "scene_labels" only for datasets with per-patch scene labels (EuroSAT). HSE is scored on
    the 20 m grid; LCZ on the 10 m label grid, each 20 m predicted class covering its 2x2 label pixels.
    Raises UrbanMTLError for unusable arguments, models or data.
    """
    data = _check_arguments(data, batch_size, patch_size, subset, hse_threshold)
    # TensorFlow and the data readers are imported here so that `--help` and argument errors stay instant.
    from ..network.saving import load_model

    loaded = load_model(model)
    opened = _open_data(loaded, data, patch_size, subset, val_fraction, split_seed)
    result = score(loaded, opened, batch_size=batch_size, hse_threshold=hse_threshold, progress=progress)
    if out is not None:
        _write_json(result, Path(out))
    if confusion_png is not None and "lcz" in result:
        _draw_confusion(result["lcz"], loaded.path, confusion_png)
    return result


def _check_arguments(data: Sequence[str] | str, batch_size: int, patch_size: Optional[int], subset: str,
                     hse_threshold: float) -> list[str]:
    """The dataset specs as a list of text; UrbanMTLError for an argument out of range."""
    if isinstance(data, (str, os.PathLike)):
        data = [str(data)]
    data = [str(spec) for spec in data]
    if not data:
        raise UrbanMTLError("No evaluation data was given. Pass at least one dataset (a path or FORMAT:PATH).")
    if batch_size < 1:
        raise UrbanMTLError(f"The batch size must be at least 1; got {batch_size}.")
    if patch_size is not None:
        _check_patch_size(patch_size)
    if subset not in SUBSETS:
        raise UrbanMTLError(f"Unknown subset '{subset}'. Choose one of: {', '.join(SUBSETS)}.")
    if not 0.0 < hse_threshold <= 1.0:
        raise UrbanMTLError(
            f"The HSE threshold must be a fraction in (0, 1] (built = HSE >= threshold); got {hse_threshold}."
        )
    return data


def _open_data(loaded: Any, data: list[str], patch_size: Optional[int], subset: str,
               val_fraction: Optional[float], split_seed: Optional[int]) -> list[tuple[str, Any]]:
    """(spec, Dataset) pairs to score: every dataset of `data`, or its `subset` part as core.train split it;
    refused when none is left or when the model and the data share no task."""
    from ..data import open_datasets

    trained = loaded.card.get("training", {}).get("config", {})     # core.train's settings, when it made the model
    trained_patch = trained.get("patch_size") if subset != "all" else None
    given_patch = patch_size
    if patch_size is None:
        patch_size = int(trained_patch) if trained_patch else DEFAULT_PATCH_SIZE
        _check_patch_size(patch_size)
    opened = [(spec, dataset) for spec in data for dataset in open_datasets(spec, patch_size=patch_size)]
    if subset != "all":
        opened = _subset_parts(opened, trained, loaded.path, subset, val_fraction, split_seed, given_patch)
    if not opened:
        raise UrbanMTLError(f"The data {', '.join(data)} holds no dataset to evaluate on. Check the paths.")
    _check_tasks(loaded, [d for _, d in opened], loaded.path)
    return opened


def _subset_parts(opened: list[tuple[str, Any]], trained: dict, model_path: Path, subset: str,
                  val_fraction: Optional[float], split_seed: Optional[int], given_patch: Optional[int]
                  ) -> list[tuple[str, Any]]:
    """The train or val part of each dataset, split with the training run's settings (or the given ones)."""
    from ..data.scene import SceneDataset

    trained_patch = trained.get("patch_size")
    fraction, seed = _split_settings(trained, model_path, subset, val_fraction, split_seed)
    if given_patch is not None and trained_patch and given_patch != int(trained_patch) and \
            any(isinstance(dataset, SceneDataset) for _, dataset in opened):
        raise UrbanMTLError(
            f"With --subset {subset}, scenes are cut into the blocks core.train split them into, which depend "
            f"on the training patch size ({int(trained_patch)} px, from the model card); --patch-size "
            f"{given_patch} would cut other blocks and mix training and validation areas. Leave --patch-size "
            f"out, or give {int(trained_patch)}."
        )
    return [(spec, dataset.split(fraction, seed)[subset == "val"]) for spec, dataset in opened]


def _draw_confusion(lcz: dict[str, Any], model_path: Path, png: str | os.PathLike) -> None:
    title = (f"LCZ confusion matrix: {model_path.parent.name}/{model_path.name}\n"
             f"OA {lcz['oa']:.3f}   Kappa {_fmt(lcz['kappa'])}   AA {lcz['aa']:.3f}   WA {lcz['wa']:.3f}   "
             f"n = {lcz['n']} px")
    try:
        plot_confusion_matrix(np.array(lcz["confusion_matrix"]), png, title)
    except OSError as exc:
        raise UrbanMTLError(f"Cannot write the confusion matrix figure '{png}': {exc.strerror or exc}. "
                            f"Choose a writable path with --confusion-png.") from None


def score(loaded: Any, opened: Sequence[tuple[str, Any]], *, batch_size: int = 8, hse_threshold: float = 0.5,
          progress: bool = False) -> dict[str, Any]:
    """Metrics of a loaded model (core.network.model.LoadedModel) over (spec, Dataset) pairs, each dataset read once.

    The engine of `evaluate`, also used by training for the card of its final model (on the validation
    split) and by bench/table1.py. Returns the dict `evaluate` documents, without writing anything.
    """
    from ..data import iterate_batches, steps_per_epoch
    from ..network.inference import predict_batch

    data = [spec for spec, _ in opened]
    total = sum(steps_per_epoch([d], batch_size, training=False) for _, d in opened)
    overall = MetricAccumulator(hse_threshold=hse_threshold)
    scenes = SceneLabelTally()
    entries: list[dict[str, Any]] = []
    n_batches = 0
    with _progress_bar(total, progress) as bar:
        for spec, dataset in opened:
            accumulator = MetricAccumulator(hse_threshold=hse_threshold)
            labels = _patch_labels(dataset)
            seen = 0
            for x, y in iterate_batches([dataset], batch_size, training=False):
                image = np.asarray(x["image"], dtype=np.float32)
                _check_image(image, dataset)
                pred = predict_batch(loaded.network, image)
                accumulator.update(y, pred)
                if labels is not None:
                    scenes.add(labels[seen:seen + image.shape[0]], y, pred)
                seen += image.shape[0]
                n_batches += 1
                bar.update(1)
            if labels is not None and seen != len(labels):
                raise UrbanMTLError(
                    f"The dataset '{_name(dataset)}' lists {len(labels)} scene labels but yielded {seen} patches; "
                    f"its file is inconsistent. Re-create it or evaluate it without scene labels."
                )
            overall.merge(accumulator)
            entries.append({"spec": spec, **_describe(dataset), "metrics": accumulator.result()})

    if n_batches == 0:
        raise UrbanMTLError(f"The data {', '.join(data)} yielded no patch to evaluate. Check that it is not empty.")
    scores = overall.result()
    if not scores:
        raise UrbanMTLError(
            f"No pixel of {', '.join(data)} has a reference for a task the model '{loaded.path}' predicts, so "
            f"nothing could be scored. Check the references' nodata values and coverage."
        )
    result: dict[str, Any] = {**scores, "model": str(loaded.path), "data": entries, "n_batches": n_batches}
    if scenes:
        result["scene_labels"] = scenes.result()
    return result



# --- helpers ------------------------------------------------------------------------------------------


def _check_patch_size(patch_size: int) -> None:
    if patch_size < 8 or patch_size % 8:
        raise UrbanMTLError(f"The patch size must be a positive multiple of 8 pixels; got {patch_size}.")


def _split_settings(trained: dict, model_path: Path, subset: str, val_fraction: Optional[float],
                    split_seed: Optional[int]) -> tuple[float, int]:
    """(val_fraction, split_seed) for a train/val subset: the arguments, else the model card's training ones."""
    fraction = val_fraction if val_fraction is not None else trained.get("val_fraction")
    seed = split_seed if split_seed is not None else trained.get("split_seed", 0)
    if fraction is None:
        raise UrbanMTLError(
            f"The model card of '{model_path}' does not say how its training data was split. Give --val-fraction "
            f"(and --split-seed) to choose the {subset} part, or use --subset all."
        )
    return float(fraction), int(seed)


def _check_tasks(loaded: Any, datasets: list[Any], path: Path) -> None:
    """Refuse up front when the model and the data share no task (e.g. an HSE-only model on So2Sat)."""
    model_tasks = [t for t in ("hse", "lcz") if getattr(loaded, f"has_{t}")]
    data_tasks = [t for t in ("hse", "lcz") if any(getattr(d, f"has_{t}", False) for d in datasets)]
    if not set(model_tasks) & set(data_tasks):
        raise UrbanMTLError(
            f"The model '{path}' predicts {' and '.join(t.upper() for t in model_tasks)}, but the data only has "
            f"references for {' and '.join(t.upper() for t in data_tasks) or 'no task'}. Evaluate on data with a "
            f"reference for a task the model predicts."
        )


def _check_image(image: np.ndarray, dataset: Any) -> None:
    if image.ndim != 4 or image.shape[1] % 8 or image.shape[2] % 8:
        raise UrbanMTLError(
            f"The dataset '{_name(dataset)}' gave image batches of shape {image.shape}; the network needs "
            f"(B, H, W, 10) with H and W multiples of 8. Use a --patch-size that is a multiple of 8."
        )


def _name(dataset: Any) -> str:
    return str(getattr(dataset, "name", None) or getattr(dataset, "path", None) or dataset)


def _describe(dataset: Any) -> dict[str, Any]:
    describe = getattr(dataset, "describe", None)
    if callable(describe):
        return dict(describe())
    return {"name": _name(dataset), "format": getattr(dataset, "format", None)}


def _patch_labels(dataset: Any) -> Optional[list[str]]:
    """Human scene labels per patch (EuroSAT), in the order evaluation batches yield patches; None if absent."""
    get = getattr(dataset, "patch_labels", None)
    labels = get() if callable(get) else None
    return None if labels is None else [str(v) for v in labels]


class _NoBar:
    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def _progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar over batches on stderr; a silent stand-in when disabled or when tqdm is not installed
    (QGIS's Python may lack it, and evaluation must not depend on a progress bar)."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="Evaluating", unit="batch", file=sys.stderr, dynamic_ncols=True)


def _write_json(result: dict[str, Any], path: Path) -> None:
    """Write through a temporary sibling and rename, so an interrupted run never leaves half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, tmp=path.with_name(f".tmp.{path.name}")) as tmp:
            tmp.write_text(json.dumps(result, indent=2, allow_nan=False, default=str) + "\n")
    except OSError as exc:
        raise UrbanMTLError(f"Cannot write the metrics file '{path}': {exc.strerror or exc}. "
                            f"Choose a writable path with --out.") from None


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def default_confusion_png(out: str | os.PathLike) -> Path:
    """METRICS.json -> METRICS_confusion.png beside it."""
    out = Path(out)
    return out.with_name(out.stem + CONFUSION_SUFFIX)


def summary(result: dict[str, Any]) -> str:
    """A few lines for the terminal: the headline scores of each task."""
    lines = []
    if "hse" in result:
        h = result["hse"]
        lines.append(f"HSE  MAE {h['mae_pp']:.2f} pp | at {h['threshold']:g}: Kappa {_fmt(h['kappa'])}  "
                     f"AA {_fmt(h['aa'])}  recall {_fmt(h['recall'])}  F1 {_fmt(h['f1'])}  ({h['n']} px at 20 m)")
    if "lcz" in result:
        l = result["lcz"]  # noqa: E741
        lines.append(f"LCZ  OA {l['oa']:.3f}  Kappa {_fmt(l['kappa'])}  AA {l['aa']:.3f}  WA {l['wa']:.3f}  "
                     f"OA_urb {_fmt(l['oa_urb'])}  OA_bu {_fmt(l['oa_bu'])}  ({l['n']} px at 10 m)")
    for label, entry in result.get("scene_labels", {}).items():
        parts = [f"{label:<22} n={entry['n']:<4}"]
        if "share_built" in entry:
            parts.append(f"built {entry['share_built']:.2f}")
        if "mean_hse" in entry:
            parts.append(f"mean HSE {entry['mean_hse']:.3f}")
        lines.append("  " + "  ".join(parts))
    return "\n".join(lines)
