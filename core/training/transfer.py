"""What a fine-tuning run changes in training (core.training.run): the start model's weights copied in, the
layers that keep them (freeze_layers), and the start model as a distillation target whose classes are first
translated and lumped as core.finetuning writes it (distill_matrices)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..common.errors import UrbanMTLError
from ..common.lcz import NUM_CLASSES
from .config import TrainConfig

FREEZES = ("none", "backbone", "heads")


def fine_tuning_settings(cfg: TrainConfig, start_model) -> dict[str, Any]:
    """The trainer's fine-tuning settings: layers kept frozen, and the start model as a distillation target."""
    settings: dict[str, Any] = {"freeze": cfg.freeze}
    if cfg.distill > 0 and start_model is not None:
        start_model.network.trainable = False
        settings.update(teacher=start_model.network, distill=cfg.distill)
        if cfg.distill_map:
            settings["remap"], settings["confirmed"] = distill_matrices(cfg.distill_map)
    return settings


def distill_matrices(path: str) -> tuple[np.ndarray, float]:
    """What a distillation target passes through (core.finetuning writes the file): (3, 17, 17) matrices, the
    first two padded from (17, G): the start model's classes translated ("matrix", 17 x 17) then the classes of
    "lump" summed into one group, the network's own classes summed alike, and the translation alone; and
    "confirmed", the weight of the distillation of every class apart (the first two keep how much goes to each
    other class and to the lumped ones together, and leave the split among the lumped classes to the
    references; the third holds that split too)."""
    import json

    values = json.loads(Path(path).read_text())
    matrix = np.asarray(values.get("matrix", np.eye(NUM_CLASSES)), dtype=np.float32)
    if matrix.shape != (NUM_CLASSES, NUM_CLASSES):
        raise UrbanMTLError(f"distill_map {path}: 'matrix' is {matrix.shape}, not {NUM_CLASSES} x {NUM_CLASSES}.")
    lump = [int(c) for c in values.get("lump", [])]
    others = [c for c in range(1, NUM_CLASSES + 1) if c not in lump]
    groups = np.zeros((NUM_CLASSES, len(others) + (1 if lump else 0)), np.float32)
    for j, c in enumerate(others):
        groups[c - 1, j] = 1.0
    for c in lump:
        groups[c - 1, -1] = 1.0
    pad = lambda m: np.pad(m, ((0, 0), (0, NUM_CLASSES - m.shape[1])))  # noqa: E731 - one shape for all three
    return np.stack([pad(matrix @ groups), pad(groups), matrix]), float(values.get("confirmed", 0.0))


def freeze_layers(network, freeze: str) -> None:
    """Keep layers of the training network at their weights: "backbone" = blocks 1-4 (the shared features),
    the HSE head (its CBAM and output) and every BatchNorm (which then runs on its moving statistics)."""
    import keras

    if freeze == "none":
        return
    heads = ("lcz_ds0", "lcz_ds1", "lcz_ds2", "lcz_main", "lcz_p2f")
    for layer in network.layers:
        if freeze == "heads" and layer.name not in heads and layer.weights:
            layer.trainable = False
        if (layer.name.startswith(("block1", "block2", "block3", "block4", "hse"))
                or isinstance(layer, keras.layers.BatchNormalization)):
            layer.trainable = False


def load_start_model(cfg: TrainConfig):
    """The model to fine-tune from (cfg.init_from), loaded; cfg takes over its architecture from its card."""
    from ..network.saving import load_model

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


def copy_weights(loaded, network) -> None:
    """Copy the start model's weights into `network` (the same architecture, checked weight by weight)."""
    source, target = loaded.network.get_weights(), network.get_weights()
    if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source, target)):
        raise UrbanMTLError(
            f"The start model '{loaded.path}' does not have the architecture its card states (weights differ "
            f"in number or shape). Retrain it, or start without --init-from.")
    network.set_weights(source)


