"""The files of a training run folder: creating or reopening it, its state, the log and the loss curve.

Run folder contents: model.keras (the inference model the plugin loads) + model_card.json, best.weights.h5 and
last.weights.h5 (+ last.optimizer.npz, state.json: what --resume needs), log.csv (one row per epoch: each task's
loss and the learned weights), tensorboard/, loss_curve.png, config.json (the settings actually used).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..common import atomic
from .config import TrainConfig
from ..common.errors import UrbanMTLError

STATE_FILE = "state.json"
LOG_FILE = "log.csv"
#: The checkpoints only --resume needs (a run's model is model.keras).
CHECKPOINT_FILES = ("best.weights.h5", "last.weights.h5", "last.optimizer.npz")


def open_run_folder(run: Path, cfg: TrainConfig, resume: bool) -> dict[str, Any]:
    """The run's state (epochs done, best value and epoch, epochs without improvement), after writing the
    settings to config.json: read from state.json when resuming, else a new state in a new (or empty) folder."""
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
    return state


def write_state(run: Path, state: dict[str, Any]) -> None:
    (run / STATE_FILE).write_text(json.dumps(state, indent=2))


def remove_new_files(run: Path, before: set, existed: bool) -> None:
    """Remove what a failed start added to `run` (files not in `before`), and the folder if it made it."""
    import shutil

    for path in set(run.iterdir()) - before if run.exists() else ():
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    if not existed and run.exists() and not any(run.iterdir()):
        run.rmdir()


def atomic_write(write, path: Path) -> None:
    """Write through a temporary sibling then rename: a run killed mid-write keeps the previous file."""
    with atomic.atomic_write(path, tmp=path.with_name(f".tmp.{path.name}")) as tmp:
        write(str(tmp))


def truncate_log(path: Path, epochs_done: int) -> None:
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


def plot_losses(log: Path, png: Path) -> None:
    """Draw every *loss column of log.csv against the epoch (validation dashed) into `png`."""
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
        # Without validation data Keras's CSVLogger writes 'NA' in the val_* columns: nothing to draw there.
        if any(r[key] in ("", "NA") for r in rows):
            continue
        ax.plot(epochs, [float(r[key]) for r in rows], label=key, linestyle="--" if key.startswith("val_") else "-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
