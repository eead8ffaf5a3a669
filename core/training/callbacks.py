"""Keras callbacks of a training run: learned weights in the log, checkpoints, early stopping, all resumable.

Imports TensorFlow (Keras) at import time; core.training.run imports it once a run is under way.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .config import TrainConfig
from .run_folder import LOG_FILE, STATE_FILE, atomic_write


class LearnedWeights(keras.callbacks.Callback):
    """Adds s_<task> and the effective weight of each task to the epoch's logs (and so to log.csv)."""

    def __init__(self, trainer) -> None:
        super().__init__()
        self.trainer = trainer

    def on_epoch_end(self, epoch, logs=None):
        for task, s in self.trainer.log_vars.items():
            value = float(keras.ops.convert_to_numpy(s))
            logs[f"s_{task}"] = value
            if self.trainer.weighting == "learned":
                logs[f"w_{task}"] = (0.5 if task == "hse" else 1.0) * math.exp(-value)


class ReseedDropout(keras.callbacks.Callback):
    """Dropout draws from (seed, epoch, layer), so a resumed epoch drops the same units as an unbroken run."""

    def __init__(self, trainer, seed: Any) -> None:
        super().__init__()
        self.trainer = trainer
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        base = self.seed if self.seed is not None else 0
        for i, layer in enumerate(self.trainer.network.layers):
            generator = getattr(layer, "seed_generator", None)
            if generator is not None:
                generator.state.assign(np.array([base * 1_000_003 + epoch * 1009 + i, 0], dtype="int64"))


def _uses_ema(optimizer) -> bool:
    """True when the optimizer keeps a moving average of the weights (config `ema` > 0)."""
    return bool(getattr(optimizer, "use_ema", False))


def _swap_averaged(optimizer) -> None:
    """Exchange the weights and the optimizer's moving average of them (Keras keeps it in the optimizer,
    use_ema=True, and updates it in every training step)."""
    for var, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
        live = keras.ops.convert_to_numpy(var)
        var.assign(keras.ops.convert_to_numpy(average))
        average.assign(live)


@contextmanager
def averaged_weights(trainer):
    """Inside the block the network holds the moving average of its weights (config `ema`); outside, the
    weights being trained. Without ema it changes nothing."""
    optimizer = trainer.optimizer
    if not _uses_ema(optimizer):
        yield
        return
    _swap_averaged(optimizer)
    try:
        yield
    finally:
        _swap_averaged(optimizer)


class AveragedValidation(keras.callbacks.Callback):
    """With `ema`, each epoch's validation scores the averaged weights, the ones RunState keeps as best."""

    def __init__(self, trainer) -> None:
        super().__init__()
        self.trainer = trainer
        self.swapped = False

    def on_test_begin(self, logs=None):
        self.swapped = _uses_ema(self.trainer.optimizer)
        if self.swapped:
            _swap_averaged(self.trainer.optimizer)

    def on_test_end(self, logs=None):
        if self.swapped:
            _swap_averaged(self.trainer.optimizer)
            self.swapped = False


class RunState(keras.callbacks.Callback):
    """Saves last (every epoch) and best (on `monitor`) checkpoints and stops early after `patience` epochs
    without improvement; its state lives in state.json so --resume continues exactly. With `ema` the best
    checkpoint holds the averaged weights, the last one the weights being trained (and the optimizer, with
    the average, beside it)."""

    def __init__(self, trainer, run: Path, state: dict[str, Any], monitor: str, patience: int) -> None:
        super().__init__()
        self.trainer = trainer
        self.run = run
        self.state = state
        self.monitor = monitor
        self.patience = patience

    def on_epoch_end(self, epoch, logs=None):
        trainer, run, state, monitor = self.trainer, self.run, self.state, self.monitor
        value = float(logs.get(monitor, np.inf))
        if value < state["best"]:
            state.update(best=value, best_epoch=epoch + 1, wait=0)
            with averaged_weights(trainer):
                atomic_write(lambda p: trainer.save_weights(p), run / "best.weights.h5")
        else:
            state["wait"] += 1
        state["epochs_done"] = epoch + 1
        atomic_write(lambda p: trainer.save_weights(p), run / "last.weights.h5")
        atomic_write(lambda p: np.savez(p, *[np.asarray(v) for v in trainer.optimizer.variables]),
                     run / "last.optimizer.npz")
        atomic_write(lambda p: Path(p).write_text(json.dumps(state, indent=2)), run / STATE_FILE)
        if state["wait"] >= self.patience:
            print(f"Early stopping: {monitor} has not improved for {self.patience} epochs "
                  f"(best {state['best']:.4f} at epoch {state['best_epoch']}).")
            self.model.stop_training = True


def run_callbacks(trainer, run: Path, cfg: TrainConfig, state: dict[str, Any], monitor: str) -> list:
    """The callbacks of a run, in the order Keras calls them: learning-rate schedule, dropout reseeding, learned
    weights, validation of the averaged weights (ema), checkpoints and early stopping, log.csv, TensorBoard."""
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch: cfg.learning_rate * cfg.lr_decay ** (epoch // cfg.lr_decay_every))
    return [
        schedule,
        ReseedDropout(trainer, cfg.seed),
        LearnedWeights(trainer),
        AveragedValidation(trainer),
        RunState(trainer, run, state, monitor, cfg.patience),
        keras.callbacks.CSVLogger(str(run / LOG_FILE), append=True),
        keras.callbacks.TensorBoard(str(run / "tensorboard"), write_graph=False, profile_batch=0),
    ]
