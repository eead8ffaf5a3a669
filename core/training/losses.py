"""The losses of Qiu et al.: exp(y)-weighted HSE MAE, LCZ cross-entropy, learned task weights; with masking."""

from __future__ import annotations

import tensorflow as tf

_EPS = 1e-7


def upsample_to(prob: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Bilinearly resize probabilities (B, h, w, C) to the spatial size of `like` (B, H, W, ...).

    Bilinear resizing is linear, so resizing the averaged probabilities equals averaging the resized members.
    """
    size = tf.shape(like)[1:3]
    return tf.image.resize(prob, size, method="bilinear")


def centre(tensor: tf.Tensor, margin: int) -> tf.Tensor:
    """(B, H, W, C) without `margin` rows and columns on each side (the tensor itself when margin is 0)."""
    if margin <= 0:
        return tensor
    h, w = tf.shape(tensor)[1], tf.shape(tensor)[2]
    return tensor[:, margin:h - margin, margin:w - margin]


def hse_loss(reference: tf.Tensor, prediction: tf.Tensor, margin: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean over referenced pixels of |y - y_hat| * exp(y), y in [0, 1]; and the number of those pixels.

    reference, prediction: (B, h, w, 1) on the 20 m grid; reference NaN = no reference (drops out of the mean).
    margin: 20 m pixels on each side of the window that do not count (see lcz_loss).
    Returns (loss scalar, count scalar); the loss is 0 when no pixel has a reference.
    """
    reference, prediction = centre(reference, margin), centre(prediction, margin)
    valid = tf.logical_not(tf.math.is_nan(reference))
    y = tf.where(valid, reference, tf.zeros_like(reference))
    per_pixel = tf.abs(y - prediction) * tf.exp(y)
    weight = tf.cast(valid, per_pixel.dtype)
    count = tf.reduce_sum(weight)
    return tf.math.divide_no_nan(tf.reduce_sum(per_pixel * weight), count), count


def lcz_loss(reference: tf.Tensor, probabilities: tf.Tensor, margin: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """Cross-entropy of (soft or one-hot) LCZ references against averaged probabilities, and the pixel count.

    reference: (B, H, W, 17) at the label grid, rows summing to 1, all-zero rows = no reference.
    probabilities: (B, h, w, 17) averaged deep-supervision probabilities, resized to the label grid here.
    margin: label-grid pixels on each side of the window that do not count: their reference was made from
    imagery that lies partly outside the window (config `label_margin`).
    """
    probabilities = centre(upsample_to(probabilities, reference), margin)
    reference = centre(reference, margin)
    weight = tf.cast(tf.reduce_sum(reference, axis=-1) > 0.0, probabilities.dtype)
    per_pixel = -tf.reduce_sum(reference * tf.math.log(tf.clip_by_value(probabilities, _EPS, 1.0)), axis=-1)
    count = tf.reduce_sum(weight)
    return tf.math.divide_no_nan(tf.reduce_sum(per_pixel * weight), count), count


def distill_loss(reference: tf.Tensor, target: tf.Tensor, probabilities: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Cross-entropy of the network's LCZ probabilities against another model's (`target`, both (B, h, w, 17)
    at 20 m, resized to the label grid here) over the pixels where `reference` (B, H, W, 17) has no class;
    and the number of those pixels."""
    probabilities = upsample_to(probabilities, reference)
    target = upsample_to(target, reference)
    weight = tf.cast(tf.reduce_sum(reference, axis=-1) <= 0.0, probabilities.dtype)
    per_pixel = -tf.reduce_sum(target * tf.math.log(tf.clip_by_value(probabilities, _EPS, 1.0)), axis=-1)
    count = tf.reduce_sum(weight)
    return tf.math.divide_no_nan(tf.reduce_sum(per_pixel * weight), count), count


def combine(
    losses: dict[str, tf.Tensor],
    counts: dict[str, tf.Tensor],
    weighting: str,
    log_vars: dict[str, tf.Tensor] | None = None,
) -> tf.Tensor:
    """Total loss from per-task losses.

    weighting "single"/"equal": the sum. "learned" (Kendall et al. 2018, homoscedastic uncertainty):
    0.5 * exp(-s_h) * L_hse + exp(-s_l) * L_lcz + 0.5 * (s_h + s_l), where a task's term and its
    regulariser only count when the batch holds a reference for that task (else its s would drift).
    """
    total = tf.constant(0.0)
    for task, loss in losses.items():
        present = tf.cast(counts[task] > 0.0, loss.dtype)
        if weighting == "learned":
            s = log_vars[task]
            factor = 0.5 if task == "hse" else 1.0
            total += present * (factor * tf.exp(-s) * loss + 0.5 * s)
        else:
            total += loss
    return total
