"""The training data pipeline: datasets opened, split into training and validation, checked against the
variant's tasks, and batched epoch by epoch into a tf.data pipeline."""

from __future__ import annotations

from typing import Iterator

from .config import TrainConfig
from ..common.errors import UrbanMTLError


def open_all(specs: list[str], patch_size: int) -> list:
    """Every dataset of the dataset specs (a path or FORMAT:PATH each; a folder may give several)."""
    from ..data import open_datasets

    datasets = []
    for spec in specs:
        datasets.extend(open_datasets(spec, patch_size=patch_size))
    return datasets


def scene_key_matches(name: str, keys: list[str]) -> bool:
    """True when a dataset name is one of `keys` or starts with '<key>_' (a city name before its date)."""
    return any(name == k or name.startswith(f"{k}_") for k in keys)


def split_datasets(datasets: list, cfg: TrainConfig) -> tuple[list, list]:
    """(training, validation) datasets per the config.

    val_data given: it is the validation set. Otherwise scenes named in val_scenes go whole to validation (a
    name no dataset has is an error: a typo would silently validate on nothing); the remaining datasets are
    split by val_fraction (patch files by patch, scenes by area), except, when val_scenes is set, scenes that
    came from a folder of manifests: those are validated by whole scenes only and train on all their area.
    """
    datasets = _without_excluded(datasets, cfg.exclude_scenes)
    if cfg.val_data:
        return datasets, open_all(cfg.val_data, cfg.patch_size)
    held = [d for d in datasets if scene_key_matches(d.name, cfg.val_scenes)]
    missing = [k for k in cfg.val_scenes if not any(scene_key_matches(d.name, [k]) for d in datasets)]
    if missing:
        raise UrbanMTLError(
            f"val_scenes names {', '.join(missing)}, but no training dataset is called so (datasets: "
            f"{', '.join(d.name for d in datasets)}). Fix the names in val_scenes.")
    rest = [d for d in datasets if d not in held]
    if not rest:
        raise UrbanMTLError("val_scenes holds out every dataset; nothing is left to train on.")
    train_sets, val_sets = [], list(held)
    for d in rest:
        whole = bool(cfg.val_scenes) and getattr(d, "group", None) is not None
        if cfg.val_fraction > 0 and not whole:
            part_train, part_val = d.split(cfg.val_fraction, cfg.split_seed)
            train_sets.append(part_train)
            val_sets.append(part_val)
        else:
            train_sets.append(d)
    return train_sets, val_sets


def _without_excluded(datasets: list, keys: list[str]) -> list:
    """`datasets` less those named by `keys` (closed); a key no dataset has is an error, as for val_scenes."""
    if not keys:
        return datasets
    missing = [k for k in keys if not any(scene_key_matches(d.name, [k]) for d in datasets)]
    if missing:
        raise UrbanMTLError(
            f"exclude_scenes names {', '.join(missing)}, but no training dataset is called so (datasets: "
            f"{', '.join(d.name for d in datasets)}). Fix the names in exclude_scenes.")
    kept = []
    for d in datasets:
        if scene_key_matches(d.name, keys):
            d.close()
        else:
            kept.append(d)
    if not kept:
        raise UrbanMTLError("exclude_scenes leaves out every dataset; nothing is left to train on.")
    return kept


BALANCES = ("area", "scene")


def check_balance(balance: str) -> None:
    if balance not in BALANCES:
        raise UrbanMTLError(f"balance must be one of {', '.join(BALANCES)}, got {balance!r}.")


def balance_scenes(datasets: list, balance: str) -> None:
    """With balance "scene", every training scene that came from a folder of manifests (a city) gets the same
    number of windows per epoch, their total unchanged (the sum of their areas in windows); "area" leaves every
    dataset at its area. Patch files and single scenes always keep their area."""
    check_balance(balance)
    scenes = [d for d in datasets if getattr(d, "group", None) is not None]
    if balance == "area" or not scenes:
        return
    share = max(1, round(sum(len(d) for d in scenes) / len(scenes)))
    for d in scenes:
        d.epoch_windows = share


def configure_windows(datasets: list, cfg: TrainConfig) -> None:
    """How scene datasets draw their training windows (core.data.scene): around training polygons, every class
    alike to cfg.class_balance, cfg.background of them anywhere; cfg.rare_windows of them on rare classes."""
    rare = lcz_codes(cfg.rare_classes, "rare_classes")
    for d in datasets:
        if hasattr(d, "balance_classes"):
            d.balance_classes, d.background_share = cfg.class_balance, cfg.background
            d.rare_share, d.rare_classes = cfg.rare_windows, rare


def lcz_codes(values: list[str], key: str) -> tuple[int, ...]:
    """LCZ codes 1..17 of class names such as "1", "10", "A" or "G" (a config list `key`)."""
    from ..data.reference_polygons import parse_lcz_value

    codes = []
    for value in values:
        try:
            code = parse_lcz_value(value)
        except ValueError:
            code = None
        if code is None:
            raise UrbanMTLError(f"{key} holds {value!r}, which is not an LCZ class; use 1-10 or A-G.")
        codes.append(code)
    return tuple(codes)


def check_tasks(model_cfg, datasets, fine_tuning: bool = False) -> None:
    """Each task of the variant needs a reference somewhere in the data; when fine-tuning, a task without one
    keeps the start model's head (its loss is masked out)."""
    wanted = [t for t in ("hse", "lcz") if getattr(model_cfg, f"has_{t}")]
    if fine_tuning and not any(any(getattr(d, f"has_{t}") for d in datasets) for t in wanted):
        raise UrbanMTLError(
            f"None of the training data has a reference for {' or '.join(t.upper() for t in wanted)}. Give "
            f"data with HSE and/or LCZ references.")
    for task in wanted:
        if fine_tuning:
            if not any(getattr(d, f"has_{task}") for d in datasets):
                print(f"Note: the data has no {task.upper()} reference; the {task.upper()} head keeps the start "
                      f"model's weights apart from what the shared layers learn.")
            continue
        if not any(getattr(d, f"has_{task}") for d in datasets):
            raise UrbanMTLError(
                f"Variant '{model_cfg.variant}' learns {task.upper()}, but none of the training data has a "
                f"{task.upper()} reference. Add such data or choose a variant without {task.upper()} "
                f"(e.g. {'lcz' if task == 'hse' else 'hse'}).")


def batches(datasets, cfg: TrainConfig, start_epoch: int, training: bool) -> Iterator:
    """Training: one epoch after another, forever (Keras takes steps_per_epoch of them); each epoch's order
    comes from (seed, epoch), so a resumed run sees the same batches it would have seen."""
    from ..data import iterate_batches

    seed = cfg.seed if cfg.seed is not None else 0
    if not training:
        yield from iterate_batches(datasets, cfg.batch_size, training=False)
        return
    epoch = start_epoch
    while True:
        yield from iterate_batches(datasets, cfg.batch_size, training=True, seed=seed, epoch=epoch,
                                   augment=cfg.augment, spectral_jitter=cfg.spectral_jitter, mix=cfg.mix_batches,
                                   atmosphere=cfg.atmosphere)
        epoch += 1
