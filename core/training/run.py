"""`train`: one training run of the multitask network on the user's reference data, step by step.

`python -m core.train` is its command line (core.train). The run folder it writes is described in
core.training.run_folder; the data pipeline is core.training.datasets; the Keras model and callbacks are
core.training.trainer and core.training.callbacks; what a fine-tuning run changes (frozen layers, the start
model's weights and distillation) is core.training.transfer.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..common.errors import UrbanMTLError
from ..data.batches import generator_dataset
from .config import TrainConfig
from .datasets import balance_scenes, batches, check_balance, check_tasks, configure_windows, open_all, \
    split_datasets
from .run_folder import LOG_FILE, open_run_folder, plot_losses, remove_new_files, truncate_log, write_state
from .transfer import FREEZES, copy_weights, fine_tuning_settings, freeze_layers, load_start_model


def train(cfg: TrainConfig, resume: bool = False, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train per `cfg`, writing the run folder `cfg.out`. Returns the model card. `callbacks`: further Keras
    callbacks for the fit (e.g. a caller's progress report).

    A new run that fails before its first epoch (bad data, a bad start model, ...) removes what it wrote, so
    the corrected command can be run again with the same --out."""
    run = Path(cfg.out) if cfg.out else None
    existed = run is not None and run.exists()
    before = set(run.iterdir()) if existed else set()
    try:
        return _train(cfg, resume, callbacks)
    except _StartFailed as failed:
        if not resume and run is not None:
            remove_new_files(run, before, existed)
        raise failed.error from None


class _StartFailed(Exception):
    """An UrbanMTLError raised before the first epoch of a new run (its files are then removed)."""

    def __init__(self, error: UrbanMTLError) -> None:
        super().__init__(str(error))
        self.error = error


def _train(cfg: TrainConfig, resume: bool, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    progress = {"started": False}
    try:
        return _train_run(cfg, resume, progress, callbacks)
    except UrbanMTLError as exc:
        if progress["started"]:
            raise
        raise _StartFailed(exc) from None


@dataclass
class _Plan:
    """A run about to train: its settings, folder and state, its data, and where its epochs start."""

    cfg: TrainConfig
    run: Path
    state: dict[str, Any]
    resume: bool
    model_cfg: Any                     # core.network.model.ModelConfig
    train_sets: list
    val_sets: list
    steps: int                         # training batches per epoch
    val_steps: int                     # validation batches (0: no validation data)
    start: int                         # epochs already done
    finished: bool                     # nothing left to train: the model is only written again


def _train_run(cfg: TrainConfig, resume: bool, progress: dict[str, bool], callbacks: Sequence[Any] = ()
               ) -> dict[str, Any]:
    """The steps of a run; `progress["started"]` turns True once the first epoch begins."""
    _check_settings(cfg)
    run = Path(cfg.out)
    state = open_run_folder(run, cfg, resume)
    _seed(cfg.seed)
    start_model = load_start_model(cfg) if cfg.init_from else None
    plan = _plan(cfg, run, state, resume, fine_tuning=start_model is not None)
    with _strategy(cfg.distribute).scope():
        trainer, infer_net = build_trainer(plan.model_cfg, cfg.learning_rate, cfg.ema, cfg.label_margin,
                                            **fine_tuning_settings(cfg, start_model))
        _start_weights(plan, trainer, infer_net, start_model)
    seconds = _fit(plan, trainer, progress, callbacks)
    return _finish(plan, trainer, infer_net, seconds)


def _check_settings(cfg: TrainConfig) -> None:
    if not cfg.out:
        raise UrbanMTLError("No run folder given. Pass --out RUN_DIR.")
    if not cfg.data:
        raise UrbanMTLError("No training data given. Pass --data PATH (or FORMAT:PATH) or set 'data' in --config.")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise UrbanMTLError("--epochs and --batch-size must be at least 1.")
    if not 0.0 <= cfg.ema < 1.0:
        raise UrbanMTLError(f"--ema must be at least 0 (off) and below 1, got {cfg.ema}. Use e.g. 0.998.")
    if not isinstance(cfg.label_margin, int) or cfg.label_margin < 0 or cfg.label_margin % 2:
        raise UrbanMTLError(f"--label-margin must be an even number of 10 m pixels, 0 or more (whole 20 m "
                            f"pixels); got {cfg.label_margin!r}. Use e.g. 16.")
    if cfg.freeze not in FREEZES:
        raise UrbanMTLError(f"freeze must be one of {', '.join(FREEZES)}; got {cfg.freeze!r}.")
    if cfg.distill < 0:
        raise UrbanMTLError(f"distill must be 0 (off) or a positive weight; got {cfg.distill}.")
    if 2 * cfg.label_margin >= cfg.patch_size:
        raise UrbanMTLError(f"--label-margin {cfg.label_margin} leaves nothing of a {cfg.patch_size} px window "
                            f"to learn from; use a margin below {cfg.patch_size // 2} or a larger --patch-size.")
    check_balance(cfg.balance)


def _seed(seed: Any) -> None:
    """A seeded run draws weights, dropout and data order from `seed` and uses deterministic TensorFlow ops."""
    import keras
    import tensorflow as tf

    if seed is not None:
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()


def _plan(cfg: TrainConfig, run: Path, state: dict[str, Any], resume: bool, fine_tuning: bool) -> _Plan:
    """Open and split the data, check it against the variant's tasks and count the batches; says when the run
    has nothing left to train."""
    from ..data import steps_per_epoch
    from ..network.model import ModelConfig

    model_cfg = ModelConfig(variant=cfg.variant, base_width=cfg.base_width, in_bands=cfg.in_bands,
                            dropout=cfg.dropout, bn_momentum=cfg.bn_momentum)
    train_sets, val_sets = split_datasets(open_all(cfg.data, cfg.patch_size), cfg)
    balance_scenes(train_sets, cfg.balance)
    configure_windows(train_sets, cfg)
    check_tasks(model_cfg, train_sets, fine_tuning=fine_tuning)
    _check_margin(cfg.label_margin, train_sets + val_sets)
    steps = steps_per_epoch(train_sets, cfg.batch_size, training=True, mix=cfg.mix_batches)
    val_steps = steps_per_epoch(val_sets, cfg.batch_size, training=False) if val_sets else 0
    start = state["epochs_done"]
    finished = start >= cfg.epochs or (resume and state["wait"] >= cfg.patience)
    if finished:
        why = (f"stopped early after {start} epochs" if start < cfg.epochs
               else f"{start} of {cfg.epochs} epochs done; pass a larger --epochs with --resume to train on")
        print(f"Run '{run}' already finished ({why}); writing its model again.")
    return _Plan(cfg=cfg, run=run, state=state, resume=resume, model_cfg=model_cfg, train_sets=train_sets,
                val_sets=val_sets, steps=steps, val_steps=val_steps, start=start, finished=finished)


def _check_margin(margin: int, datasets) -> None:
    """A label margin must leave part of every dataset's windows (patch datasets keep their own size)."""
    for ds in datasets:
        if 2 * margin >= ds.patch_size:
            raise UrbanMTLError(
                f"--label-margin {margin} leaves nothing of the {ds.patch_size} px patches of "
                f"'{ds.describe().get('path', ds)}'; use a margin below {ds.patch_size // 2}.")


def _strategy(name: str):
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UrbanMTLError(
                "--distribute multiworker needs the TF_CONFIG environment variable on every machine "
                "(cluster addresses and this worker's index); see README 'Training on several machines'.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UrbanMTLError(f"Unknown --distribute '{name}'. Choose none, mirrored or multiworker.")


def build_trainer(model_cfg, learning_rate: float, ema: float = 0.0, label_margin: int = 0, freeze: str = "none",
                   teacher=None, distill: float = 0.0, remap=None, confirmed: float = 0.0):
    """(trainer, inference network): the networks of `model_cfg`, the trainer around the training one, built
    on a dummy batch and compiled with its optimizer's variables made (to be restored on --resume). ema > 0:
    the optimizer also keeps a moving average of the weights with that momentum (core.training.callbacks).
    label_margin: pixels of each window's edge the losses leave out; freeze, teacher, distill, remap, confirmed:
    fine-tuning (core.training.transfer, core.training.trainer)."""
    import keras

    from ..network.model import build_networks
    from .trainer import MultitaskTrainer

    train_net, infer_net = build_networks(model_cfg)
    freeze_layers(train_net, freeze)
    tasks = tuple(t for t in ("hse", "lcz") if getattr(model_cfg, f"has_{t}"))
    trainer = MultitaskTrainer(train_net, model_cfg.spec["weighting"], tasks, label_margin=label_margin,
                               teacher=teacher, distill=distill, remap=remap, confirmed=confirmed)
    size = 8
    trainer({k: np.zeros((1, size // (2 if k == "hse_guide" else 1), size // (2 if k == "hse_guide" else 1),
                          v.shape[-1]), "float32") for k, v in train_net.input.items()})
    optimizer = keras.optimizers.Nadam(learning_rate=learning_rate, use_ema=ema > 0, ema_momentum=ema)
    trainer.compile(optimizer=optimizer)
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer, infer_net


def _start_weights(plan: _Plan, trainer, infer_net, start_model) -> None:
    """A resumed run: its last checkpoint, optimizer state and log up to it. A new fine-tuning run: the start
    model's weights. Otherwise the fresh (seeded) weights stay."""
    resumed = plan.resume and plan.start > 0
    if start_model is not None and not resumed:
        copy_weights(start_model, infer_net)
    if not resumed:
        return
    trainer.load_weights(plan.run / "last.weights.h5")
    with np.load(plan.run / "last.optimizer.npz") as saved_vars:
        for var, key in zip(trainer.optimizer.variables, sorted(saved_vars.files, key=lambda k: int(k.split("_")[1]))):
            var.assign(saved_vars[key])
    truncate_log(plan.run / LOG_FILE, plan.start)
    if not plan.finished:
        print(f"Resuming '{plan.run}' after epoch {plan.start} (best {plan.state.get('monitor', 'loss')} "
              f"{plan.state['best']:.4f} at epoch {plan.state['best_epoch']}).")


def _fit(plan: _Plan, trainer, progress: dict[str, bool], callbacks: Sequence[Any]) -> float:
    """Train the remaining epochs (none when finished); returns the seconds trained over all sessions of the
    run, also kept in state.json."""
    from .callbacks import run_callbacks

    cfg, state = plan.cfg, plan.state
    monitor = "val_loss" if plan.val_sets else "loss"
    state["monitor"] = monitor
    train_ds = generator_dataset(lambda: batches(plan.train_sets, cfg, plan.start, True), cfg.in_bands)
    val_ds = (generator_dataset(lambda: batches(plan.val_sets, cfg, 0, False), cfg.in_bands)
              if plan.val_sets else None)
    samples = sum(len(d) for d in plan.train_sets)
    print(f"Training {cfg.variant} (base width {plan.model_cfg.base_width}) on {samples} samples/epoch "
          f"({plan.steps} steps), validating on {plan.val_steps} batches; run folder {plan.run}")
    started = time.time()
    progress["started"] = True  # from here on a failure leaves the checkpoints for --resume
    if not plan.finished:
        trainer.fit(train_ds, epochs=cfg.epochs, initial_epoch=plan.start, steps_per_epoch=plan.steps,
                    validation_data=val_ds, validation_steps=plan.val_steps or None, shuffle=False,
                    callbacks=run_callbacks(trainer, plan.run, cfg, state, monitor) + list(callbacks),
                    verbose=1 if sys.stdout.isatty() else 2)
    seconds = time.time() - started + state.get("seconds", 0.0)
    state["seconds"] = seconds
    write_state(plan.run, state)
    return seconds


def _finish(plan: _Plan, trainer, infer_net, seconds: float) -> dict[str, Any]:
    """Write the best epoch's inference network as model.keras with its card, and the loss curve."""
    from ..network.saving import save_model

    if (plan.run / "best.weights.h5").exists():
        trainer.load_weights(plan.run / "best.weights.h5")
    metrics = _final_metrics(infer_net, plan.val_sets or plan.train_sets, plan.cfg, plan.run)
    card = _model_card(plan, trainer, infer_net, metrics, seconds)
    save_model(infer_net, plan.run / "model.keras", card)
    plot_losses(plan.run / LOG_FILE, plan.run / "loss_curve.png")
    print(f"Wrote {plan.run / 'model.keras'} and {plan.run / 'model_card.json'}")
    return card


def _model_card(plan: _Plan, trainer, infer_net, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The model card: core.network.model's description of the network, plus how it was trained and its metrics."""
    import keras

    from ..network.saving import base_card

    state = plan.state
    card = base_card(plan.model_cfg, infer_net)
    card.update(
        parameters=card["parameters"],
        learned_log_variances={t: float(keras.ops.convert_to_numpy(v)) for t, v in trainer.log_vars.items()},
        training={
            "config": asdict(plan.cfg),
            "epochs_run": state["epochs_done"],
            "best_epoch": state["best_epoch"],
            "monitor": state["monitor"],
            "best": state["best"],
            "seconds": round(seconds, 1),
            "data": [d.describe() for d in plan.train_sets],
            "validation_data": [d.describe() for d in plan.val_sets],
            "metrics_on": "validation data" if plan.val_sets else "training data (no validation split)",
        },
        epochs_run=state["epochs_done"],
        metrics=metrics,
        software=_versions(),
    )
    return card


def _final_metrics(network, datasets, cfg: TrainConfig, run: Path) -> dict[str, Any]:
    """The evaluation metrics (core.evaluation.patches.score) of the final network on `datasets`: hse, lcz and, for
    datasets with human scene labels, scene_labels."""
    from ..evaluation.patches import score
    from ..network.saving import LoadedModel

    loaded = LoadedModel(network=network, card={}, path=run / "model.keras")
    result = score(loaded, [(d.describe().get("path", ""), d) for d in datasets], batch_size=cfg.batch_size,
                   hse_threshold=cfg.hse_threshold)
    return {k: result[k] for k in ("hse", "lcz", "scene_labels") if k in result}


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "platform": platform.platform()}
