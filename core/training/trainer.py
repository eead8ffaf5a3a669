"""The Keras model that trains the multitask network: its task losses, learned task weights and train/test steps.

Imports TensorFlow at import time; core.training.run imports this module only once a run is under way, so that
`python -m core.train --help` and argument errors stay instant.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from .losses import combine, distill_loss, hse_loss, lcz_loss


class MultitaskTrainer(keras.Model):
    """Wraps the training network; adds the learned log-variances s_hse, s_lcz (init 0) and the losses.

    train_step feeds the HSE reference as the P2F guide (NaN where none: the prediction is used).
    label_margin: 10 m pixels on each side of every window left out of both losses (config `label_margin`);
    the network still sees them.
    """

    def __init__(self, network: keras.Model, weighting: str, tasks: tuple[str, ...], label_margin: int = 0,
                 teacher: keras.Model | None = None, distill: float = 0.0, remap=None, confirmed: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.network = network
        # Fine-tuning: the start model's inference network, frozen, whose LCZ output the LCZ output is pulled
        # towards where a window has no LCZ reference. `remap` (3, 17, 17), when given: the matrices the start
        # model's probabilities and the network's own pass through first, lumped, and the start model's alone
        # for the distillation of every class apart, weighted `confirmed` (core.training.transfer).
        self.teacher = teacher
        self.distill = float(distill)
        self.remap = None if remap is None else tf.constant(remap, tf.float32)
        self.confirmed = float(confirmed)
        self.weighting = weighting
        self.tasks = tasks
        self.label_margin = int(label_margin)
        self.p2f = "hse_guide" in network.input
        self.log_vars = {
            t: self.add_weight(name=f"s_{t}", shape=(), initializer="zeros",
                               trainable=weighting == "learned")
            for t in tasks
        }
        names = ["loss", *[f"{t}_loss" for t in tasks]] + (["distill_loss"] if teacher is not None and distill > 0
                                                            else [])
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

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

    def _task_losses(self, y, pred, image=None):
        losses, counts = {}, {}
        if "hse" in self.tasks:
            # The HSE grid is 20 m: half the margin in its pixels. LCZ references are on the 10 m input grid.
            losses["hse"], counts["hse"] = hse_loss(y["hse"], pred["hse"], self.label_margin // 2)
        if "lcz" in self.tasks:
            losses["lcz"], counts["lcz"] = lcz_loss(y["lcz"], pred["lcz"], self.label_margin)
        total = combine(losses, counts, self.weighting, self.log_vars)
        if self.teacher is not None and self.distill > 0:
            total += self._distillation(y, pred, image, losses)
        return total, losses

    def _distillation(self, y, pred, image, losses):
        """The distillation term of the total loss (recorded in losses["distill"]); see __init__."""
        start, own = tf.stop_gradient(self.teacher(image, training=False)["lcz"]), pred["lcz"]
        if self.remap is None:
            losses["distill"], count = distill_loss(y["lcz"], start, own)
        else:
            target = tf.einsum("bhwk,kc->bhwc", start, self.remap[0])
            lumped = tf.einsum("bhwk,kc->bhwc", own, self.remap[1])
            losses["distill"], count = distill_loss(y["lcz"], target, lumped)
            if self.confirmed > 0:
                full, _ = distill_loss(y["lcz"], tf.einsum("bhwk,kc->bhwc", start, self.remap[2]), own)
                losses["distill"] += self.confirmed * full
        # On the LCZ loss's scale (its learned weight included), so `distill` is a plain ratio.
        scale = tf.exp(-self.log_vars["lcz"]) if self.weighting == "learned" else 1.0
        return tf.cast(count > 0, own.dtype) * self.distill * scale * losses["distill"]

    def _track(self, total, losses):
        self.trackers["loss"].update_state(total)
        for t, value in losses.items():
            self.trackers[f"{t}_loss"].update_state(value)
        return {name: m.result() for name, m in self.trackers.items()}

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            pred = self(self._inputs(x, y), training=True)
            total, losses = self._task_losses(y, pred, x["image"])
            # Gradients are summed over replicas, so each replica contributes its share.
            scaled = total / tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._track(total, losses)

    def test_step(self, data):
        x, y = data
        pred = self(self._inputs(x, y), training=False)
        return self._track(*self._task_losses(y, pred, x["image"]))
