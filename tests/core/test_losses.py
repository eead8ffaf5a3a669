"""The losses against values computed by hand, masking, soft targets, and the learned weighting."""

import numpy as np
import tensorflow as tf

from core.losses import combine, hse_loss, lcz_loss


def test_hse_loss_weights_dense_settlements_and_masks_nan():
    ref = np.array([0.0, 1.0, np.nan, 0.5], np.float32).reshape(1, 2, 2, 1)
    pred = np.array([0.5, 0.5, 0.9, 0.5], np.float32).reshape(1, 2, 2, 1)
    loss, count = hse_loss(tf.constant(ref), tf.constant(pred))
    # (|0-.5|*e^0 + |1-.5|*e^1 + 0) / 3 valid pixels
    assert float(count) == 3
    np.testing.assert_allclose(float(loss), (0.5 + 0.5 * np.e + 0.0) / 3, rtol=1e-6)


def test_hse_loss_without_any_reference_is_zero_not_nan():
    ref = np.full((1, 2, 2, 1), np.nan, np.float32)
    loss, count = hse_loss(tf.constant(ref), tf.constant(np.zeros_like(ref)))
    assert float(loss) == 0.0 and float(count) == 0.0


def test_lcz_loss_soft_targets_and_masked_rows():
    probs = np.full((1, 1, 1, 17), 0.01, np.float32)
    probs[..., 0], probs[..., 1] = 0.5, 0.35  # sums to 1
    ref = np.zeros((1, 2, 2, 17), np.float32)
    ref[0, 0, 0, 0] = 1.0                        # one-hot
    ref[0, 0, 1, 0], ref[0, 0, 1, 1] = 0.6, 0.4  # soft
    ref[0, 1, 0, 13] = 1.0                       # another class; row (1, 1) has no reference
    loss, count = lcz_loss(tf.constant(ref), tf.constant(probs))
    expected = (-np.log(0.5) + -(0.6 * np.log(0.5) + 0.4 * np.log(0.35)) - np.log(0.01)) / 3
    assert float(count) == 3
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_learned_weighting_formula_and_absent_tasks():
    losses = {"hse": tf.constant(0.4), "lcz": tf.constant(2.0)}
    counts = {"hse": tf.constant(10.0), "lcz": tf.constant(5.0)}
    s = {"hse": tf.constant(0.3), "lcz": tf.constant(-0.2)}
    total = combine(losses, counts, "learned", s)
    expected = 0.5 * np.exp(-0.3) * 0.4 + np.exp(0.2) * 2.0 + 0.5 * (0.3 - 0.2)
    np.testing.assert_allclose(float(total), expected, rtol=1e-6)
    counts["hse"] = tf.constant(0.0)  # e.g. a So2Sat batch: no HSE reference, no HSE term nor regulariser
    np.testing.assert_allclose(float(combine(losses, counts, "learned", s)), np.exp(0.2) * 2.0 - 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(combine(losses, counts, "equal")), 2.4, rtol=1e-6)
