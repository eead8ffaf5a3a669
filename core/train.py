"""`python -m core.train`: train the multitask network on the user's reference data and write a run folder.

Run folder contents: model.keras (the inference model the plugin loads) + model_card.json, best.weights.h5 and
last.weights.h5 (+ last.optimizer.npz, state.json: what --resume needs), log.csv (one row per epoch: each task's
loss and the learned weights), tensorboard/, loss_curve.png, config.json (the settings actually used).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from .config import TrainConfig, config_keys, load_config_file, make_config
from .errors import UrbanMTLError

STATE_FILE = "state.json"
LOG_FILE = "log.csv"


# --- the Keras model that owns the losses and the learned task weights ---


def _trainer_class():
    import keras
    import tensorflow as tf

    from .losses import combine, hse_loss, lcz_loss

    class MultitaskTrainer(keras.Model):
        """Wraps the training network; adds the learned log-variances s_hse, s_lcz (init 0) and the losses.

        train_step feeds the HSE reference as the P2F guide (NaN where none: the prediction is used).
        """

        def __init__(self, network: keras.Model, weighting: str, tasks: tuple[str, ...], **kwargs):
            super().__init__(**kwargs)
            self.network = network
            self.weighting = weighting
            self.tasks = tasks
            self.p2f = "hse_guide" in network.input
            self.log_vars = {
                t: self.add_weight(name=f"s_{t}", shape=(), initializer="zeros",
                                   trainable=weighting == "learned")
                for t in tasks
            }
            self.trackers = {name: keras.metrics.Mean(name=name) for name in ["loss", *[f"{t}_loss" for t in tasks]]}

        @property
        def metrics(self):
            return list(self.trackers.values())

        def call(self, inputs, training=False):
            return self.network(inputs, training=training)

        def _inputs(self, x, y):
            inputs = {"image": x["image"]}
            if self.p2f:
                inputs["hse_guide"] = y["hse"]
            return inputs

        def _task_losses(self, y, pred):
            losses, counts = {}, {}
            if "hse" in self.tasks:
                losses["hse"], counts["hse"] = hse_loss(y["hse"], pred["hse"])
            if "lcz" in self.tasks:
                losses["lcz"], counts["lcz"] = lcz_loss(y["lcz"], pred["lcz"])
            total = combine(losses, counts, self.weighting, self.log_vars)
            return total, losses

        def _track(self, total, losses):
            self.trackers["loss"].update_state(total)
            for t, value in losses.items():
                self.trackers[f"{t}_loss"].update_state(value)
            return {name: m.result() for name, m in self.trackers.items()}

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                pred = self(self._inputs(x, y), training=True)
                total, losses = self._task_losses(y, pred)
                # Gradients are summed over replicas, so each replica contributes its share.
                scaled = total / tf.distribute.get_strategy().num_replicas_in_sync
            variables = self.trainable_variables
            self.optimizer.apply(tape.gradient(scaled, variables), variables)
            return self._track(total, losses)

        def test_step(self, data):
            x, y = data
            pred = self(self._inputs(x, y), training=False)
            return self._track(*self._task_losses(y, pred))

    return MultitaskTrainer


# --- callbacks: learned weights in the log, checkpoints, early stopping, all resumable ---


def _callbacks(trainer, run: Path, cfg: TrainConfig, state: dict[str, Any], monitor: str):
    import keras

    class LearnedWeights(keras.callbacks.Callback):
        """Adds s_<task> and the effective weight of each task to the epoch's logs (and so to log.csv)."""

        def on_epoch_end(self, epoch, logs=None):
            for task, s in trainer.log_vars.items():
                value = float(keras.ops.convert_to_numpy(s))
                logs[f"s_{task}"] = value
                if trainer.weighting == "learned":
                    logs[f"w_{task}"] = (0.5 if task == "hse" else 1.0) * math.exp(-value)

    class ReseedDropout(keras.callbacks.Callback):
        """Dropout draws from (seed, epoch, layer), so a resumed epoch drops the same units as an unbroken run."""

        def on_epoch_begin(self, epoch, logs=None):
            base = cfg.seed if cfg.seed is not None else 0
            for i, layer in enumerate(trainer.network.layers):
                generator = getattr(layer, "seed_generator", None)
                if generator is not None:
                    generator.state.assign(np.array([base * 1_000_003 + epoch * 1009 + i, 0], dtype="int64"))

    class RunState(keras.callbacks.Callback):
        """Saves last (every epoch) and best (on `monitor`) checkpoints and stops early after `patience` epochs
        without improvement; its state lives in state.json so --resume continues exactly."""

        def on_epoch_end(self, epoch, logs=None):
            value = float(logs.get(monitor, np.inf))
            if value < state["best"]:
                state.update(best=value, best_epoch=epoch + 1, wait=0)
                _atomic(lambda p: trainer.save_weights(p), run / "best.weights.h5")
            else:
                state["wait"] += 1
            state["epochs_done"] = epoch + 1
            _atomic(lambda p: trainer.save_weights(p), run / "last.weights.h5")
            _atomic(lambda p: np.savez(p, *[np.asarray(v) for v in trainer.optimizer.variables]),
                    run / "last.optimizer.npz")
            _atomic(lambda p: Path(p).write_text(json.dumps(state, indent=2)), run / STATE_FILE)
            if state["wait"] >= cfg.patience:
                print(f"Early stopping: {monitor} has not improved for {cfg.patience} epochs "
                      f"(best {state['best']:.4f} at epoch {state['best_epoch']}).")
                self.model.stop_training = True

    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch: cfg.learning_rate * cfg.lr_decay ** (epoch // cfg.lr_decay_every))
    return [
        schedule,
        ReseedDropout(),
        LearnedWeights(),
        RunState(),
        keras.callbacks.CSVLogger(str(run / LOG_FILE), append=True),
        keras.callbacks.TensorBoard(str(run / "tensorboard"), write_graph=False, profile_batch=0),
    ]


def _atomic(write, path: Path) -> None:
    """Write through a temporary sibling then rename: a run killed mid-write keeps the previous file."""
    tmp = path.with_name(f".tmp.{path.name}")
    write(str(tmp))
    os.replace(tmp, path)


# --- data ---


def _open_all(specs: list[str], patch_size: int):
    from .data import open_datasets

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
    if cfg.val_data:
        return datasets, _open_all(cfg.val_data, cfg.patch_size)
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


def _batches(datasets, cfg: TrainConfig, start_epoch: int, training: bool) -> Iterator:
    """Training: one epoch after another, forever (Keras takes steps_per_epoch of them); each epoch's order
    comes from (seed, epoch), so a resumed run sees the same batches it would have seen."""
    from .data import iterate_batches

    seed = cfg.seed if cfg.seed is not None else 0
    if not training:
        yield from iterate_batches(datasets, cfg.batch_size, training=False)
        return
    epoch = start_epoch
    while True:
        yield from iterate_batches(datasets, cfg.batch_size, training=True, seed=seed, epoch=epoch,
                                   augment=cfg.augment, spectral_jitter=cfg.spectral_jitter, mix=cfg.mix_batches)
        epoch += 1


def _tf_dataset(make_iter, bands: int):
    import tensorflow as tf

    sig = (
        {"image": tf.TensorSpec((None, None, None, bands), tf.float32)},
        {"hse": tf.TensorSpec((None, None, None, 1), tf.float32),
         "lcz": tf.TensorSpec((None, None, None, 17), tf.float32)},
    )
    return tf.data.Dataset.from_generator(make_iter, output_signature=sig).prefetch(2)


# --- the run ---


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


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train per `cfg`, writing the run folder `cfg.out`. Returns the model card.

    A new run that fails before its first epoch (bad data, a bad start model, ...) removes what it wrote, so
    the corrected command can be run again with the same --out."""
    run = Path(cfg.out) if cfg.out else None
    existed = run is not None and run.exists()
    before = set(run.iterdir()) if existed else set()
    try:
        return _train(cfg, resume)
    except _StartFailed as failed:
        if not resume and run is not None:
            _remove_new_files(run, before, existed)
        raise failed.error from None


class _StartFailed(Exception):
    """An UrbanMTLError raised before the first epoch of a new run (its files are then removed)."""

    def __init__(self, error: UrbanMTLError) -> None:
        super().__init__(str(error))
        self.error = error


def _remove_new_files(run: Path, before: set, existed: bool) -> None:
    import shutil

    for path in set(run.iterdir()) - before if run.exists() else ():
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    if not existed and run.exists() and not any(run.iterdir()):
        run.rmdir()


def _train(cfg: TrainConfig, resume: bool) -> dict[str, Any]:
    progress = {"started": False}
    try:
        return _train_run(cfg, resume, progress)
    except UrbanMTLError as exc:
        if progress["started"]:
            raise
        raise _StartFailed(exc) from None


def _train_run(cfg: TrainConfig, resume: bool, progress: dict[str, bool]) -> dict[str, Any]:
    from .model import ModelConfig, base_card, build_networks, save_model

    if not cfg.out:
        raise UrbanMTLError("No run folder given. Pass --out RUN_DIR.")
    if not cfg.data:
        raise UrbanMTLError("No training data given. Pass --data PATH (or FORMAT:PATH) or set 'data' in --config.")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise UrbanMTLError("--epochs and --batch-size must be at least 1.")
    run = Path(cfg.out)
    state_path = run / STATE_FILE
    if resume:
        if not state_path.exists():
            raise UrbanMTLError(f"Cannot resume: '{run}' has no {STATE_FILE}. Start a new run without --resume.")
        state = json.loads(state_path.read_text())
        (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    else:
        if (run / "model.keras").exists() or state_path.exists():
            raise UrbanMTLError(
                f"Run folder '{run}' already holds a run. Use --resume to continue it, or choose a new --out.")
        run.mkdir(parents=True, exist_ok=True)
        (run / LOG_FILE).unlink(missing_ok=True)          # a new run never appends to an old log
        (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        state = {"epochs_done": 0, "best": float("inf"), "best_epoch": 0, "wait": 0}
        state_path.write_text(json.dumps(state, indent=2))

    import keras
    import tensorflow as tf

    if cfg.seed is not None:
        keras.utils.set_random_seed(cfg.seed)
        tf.config.experimental.enable_op_determinism()

    start_model = _start_model(cfg) if cfg.init_from else None
    model_cfg = ModelConfig(variant=cfg.variant, base_width=cfg.base_width, in_bands=cfg.in_bands,
                            dropout=cfg.dropout, bn_momentum=cfg.bn_momentum)
    train_sets, val_sets = split_datasets(_open_all(cfg.data, cfg.patch_size), cfg)
    _check_tasks(model_cfg, train_sets, fine_tuning=start_model is not None)

    from .data import steps_per_epoch

    steps = steps_per_epoch(train_sets, cfg.batch_size, training=True, mix=cfg.mix_batches)
    val_steps = steps_per_epoch(val_sets, cfg.batch_size, training=False) if val_sets else 0
    start = state["epochs_done"]
    finished = start >= cfg.epochs or (resume and state["wait"] >= cfg.patience)
    if finished:
        why = (f"stopped early after {start} epochs" if start < cfg.epochs
               else f"{start} of {cfg.epochs} epochs done; pass a larger --epochs with --resume to train on")
        print(f"Run '{run}' already finished ({why}); writing its model again.")

    strategy = _strategy(cfg.distribute)
    with strategy.scope():
        train_net, infer_net = build_networks(model_cfg)
        tasks = tuple(t for t in ("hse", "lcz") if getattr(model_cfg, f"has_{t}"))
        trainer = _trainer_class()(train_net, model_cfg.spec["weighting"], tasks)
        size = 8
        trainer({k: np.zeros((1, size // (2 if k == "hse_guide" else 1), size // (2 if k == "hse_guide" else 1),
                              v.shape[-1]), "float32") for k, v in train_net.input.items()})
        trainer.compile(optimizer=keras.optimizers.Nadam(learning_rate=cfg.learning_rate))
        trainer.optimizer.build(trainer.trainable_variables)
        if start_model is not None and not (resume and start > 0):
            _copy_weights(start_model, infer_net)
        if resume and start > 0:
            trainer.load_weights(run / "last.weights.h5")
            with np.load(run / "last.optimizer.npz") as saved_vars:
                for var, key in zip(trainer.optimizer.variables, sorted(saved_vars.files, key=lambda k: int(k.split("_")[1]))):
                    var.assign(saved_vars[key])
            _truncate_log(run / LOG_FILE, start)
            if not finished:
                print(f"Resuming '{run}' after epoch {start} (best {state.get('monitor', 'loss')} "
                      f"{state['best']:.4f} at epoch {state['best_epoch']}).")

    monitor = "val_loss" if val_sets else "loss"
    state["monitor"] = monitor
    train_ds = _tf_dataset(lambda: _batches(train_sets, cfg, start, True), cfg.in_bands)
    val_ds = _tf_dataset(lambda: _batches(val_sets, cfg, 0, False), cfg.in_bands) if val_sets else None
    print(f"Training {cfg.variant} (base width {model_cfg.base_width}) on {sum(len(d) for d in train_sets)} samples/epoch "
          f"({steps} steps), validating on {val_steps} batches; run folder {run}")
    started = time.time()
    progress["started"] = True  # from here on a failure leaves the checkpoints for --resume
    if not finished:
        trainer.fit(train_ds, epochs=cfg.epochs, initial_epoch=start, steps_per_epoch=steps,
                    validation_data=val_ds, validation_steps=val_steps or None, shuffle=False,
                    callbacks=_callbacks(trainer, run, cfg, state, monitor), verbose=1 if sys.stdout.isatty() else 2)
    seconds = time.time() - started + state.get("seconds", 0.0)
    state["seconds"] = seconds
    (run / STATE_FILE).write_text(json.dumps(state, indent=2))

    if (run / "best.weights.h5").exists():
        trainer.load_weights(run / "best.weights.h5")
    metrics = _final_metrics(infer_net, val_sets or train_sets, cfg, run)
    card = base_card(model_cfg, infer_net)
    card.update(
        parameters=card["parameters"],
        learned_log_variances={t: float(keras.ops.convert_to_numpy(v)) for t, v in trainer.log_vars.items()},
        training={
            "config": asdict(cfg),
            "epochs_run": state["epochs_done"],
            "best_epoch": state["best_epoch"],
            "monitor": monitor,
            "best": state["best"],
            "seconds": round(seconds, 1),
            "data": [d.describe() for d in train_sets],
            "validation_data": [d.describe() for d in val_sets],
            "metrics_on": "validation data" if val_sets else "training data (no validation split)",
        },
        epochs_run=state["epochs_done"],
        metrics=metrics,
        software=_versions(),
    )
    save_model(infer_net, run / "model.keras", card)
    _plot_losses(run / LOG_FILE, run / "loss_curve.png")
    print(f"Wrote {run / 'model.keras'} and {run / 'model_card.json'}")
    return card


def _start_model(cfg: TrainConfig):
    """The model to fine-tune from (cfg.init_from), loaded; cfg takes over its architecture from its card."""
    from .model import load_model

    loaded = load_model(cfg.init_from)
    arch = loaded.card.get("config") or {}
    if not arch:
        raise UrbanMTLError(
            f"The start model '{loaded.path}' has no model card (model_card.json beside it) saying how it was "
            f"built, so its weights cannot be placed in a new network. Use a model written by core.train.")
    for key in ("variant", "base_width", "in_bands", "dropout", "bn_momentum"):
        if key in arch:
            setattr(cfg, key, arch[key])
    print(f"Fine-tuning from {loaded.path} (variant {cfg.variant}, base width {cfg.base_width}).")
    return loaded


def _copy_weights(loaded, network) -> None:
    """Copy the start model's weights into `network` (the same architecture, checked weight by weight)."""
    source, target = loaded.network.get_weights(), network.get_weights()
    if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source, target)):
        raise UrbanMTLError(
            f"The start model '{loaded.path}' does not have the architecture its card states (weights differ "
            f"in number or shape). Retrain it, or start without --init-from.")
    network.set_weights(source)


def _check_tasks(model_cfg, datasets, fine_tuning: bool = False) -> None:
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


def _final_metrics(network, datasets, cfg: TrainConfig, run: Path) -> dict[str, Any]:
    """The evaluation metrics (core.evaluate.score) of the final network on `datasets`: hse, lcz and, for
    datasets with human scene labels, scene_labels."""
    from .evaluate import score
    from .model import LoadedModel

    loaded = LoadedModel(network=network, card={}, path=run / "model.keras")
    result = score(loaded, [(d.describe().get("path", ""), d) for d in datasets], batch_size=cfg.batch_size,
                   hse_threshold=cfg.hse_threshold)
    return {k: result[k] for k in ("hse", "lcz", "scene_labels") if k in result}


def _truncate_log(path: Path, epochs_done: int) -> None:
    """Keep only the rows of completed, checkpointed epochs (a kill between checkpoint and log is possible)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < epochs_done]
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(keep)


def _plot_losses(log: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not log.exists():
        return
    with open(log, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in [k for k in rows[0] if k.endswith("loss")]:
        ax.plot(epochs, [float(r[key]) for r in rows], label=key, linestyle="--" if key.startswith("val_") else "-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "platform": platform.platform()}


# --- command line ---


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.train",
        description="Train the urbanmtl multitask network (HSE density + LCZ) and write a run folder with "
                    "model.keras, model_card.json, log.csv, checkpoints, TensorBoard logs and a loss curve. "
                    "Defaults are the paper's (Qiu et al. 2022); a --config file (YAML/JSON) sets any of them, "
                    "flags override the file.",
    )
    p.add_argument("--data", nargs="+", help="training datasets: paths, format detected from content, or "
                   "FORMAT:PATH with FORMAT in authors, so2sat, eurosat, scene, shared")
    p.add_argument("--val-data", nargs="+", help="validation datasets (default: split --val-fraction off the "
                   "training data by patch, or by area for scenes)")
    p.add_argument("--val-fraction", type=float, help="share split off for validation when no --val-data is "
                   "given (default 0.2)")
    p.add_argument("--split-seed", type=int, help="seed of that split (default 0), independent of --seed")
    p.add_argument("--variant", help="hse, lcz, mtl_equal, mtl_learned, mtl_learned_p2f (default), mtl_no_cbam")
    p.add_argument("--base-width", type=int, help="base number of filters f (default 16)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 100)")
    p.add_argument("--batch-size", type=int, help="patches per batch, over all GPUs (default 8)")
    p.add_argument("--patch-size", type=int, help="training patch size in 10 m pixels (default 128)")
    p.add_argument("--learning-rate", type=float, help="Nesterov Adam learning rate (default 0.002)")
    p.add_argument("--lr-decay", type=float, help="learning-rate factor applied every --lr-decay-every epochs "
                   "(default 0.75)")
    p.add_argument("--lr-decay-every", type=int, help="epochs between learning-rate decays (default 2)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 10)")
    p.add_argument("--spectral-jitter", type=float, help="sigma of per-band multiplicative jitter (default 0)")
    p.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                   help="switch off the 8 flips/rotations")
    p.add_argument("--seed", type=int, help="seed for data order, augmentation and weights (deterministic run)")
    p.add_argument("--init-from", help="fine-tune: start from this model (model.keras or run folder); its card "
                   "sets the architecture")
    p.add_argument("--distribute", choices=["none", "mirrored", "multiworker"],
                   help="none (default), mirrored (all GPUs of this machine), multiworker (several machines; "
                        "needs TF_CONFIG)")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--config", help="YAML or JSON file with any of: " + ", ".join(config_keys()))
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        flags = {k: v for k, v in vars(args).items() if k not in ("config", "resume")}
        if args.resume:
            # A resumed run keeps its data, model and schedule; only the epoch budget may change.
            if not args.out:
                raise UrbanMTLError("--resume needs --out RUN_DIR (the run to continue).")
            saved = Path(args.out) / "config.json"
            if not saved.exists():
                raise UrbanMTLError(f"Cannot resume: '{args.out}' holds no training run (no config.json). "
                                    f"Start a new run without --resume.")
            cfg = make_config(json.loads(saved.read_text()), {"epochs": args.epochs, "out": args.out})
        else:
            file_values = load_config_file(args.config) if args.config else {}
            cfg = make_config(file_values, flags)
        train(cfg, resume=args.resume)
    except UrbanMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
