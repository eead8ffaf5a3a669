"""The losses against values computed by hand, masking, soft targets, and the learned weighting."""

import numpy as np
import tensorflow as tf

from core.training.losses import combine, hse_loss, lcz_loss


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


def test_a_label_margin_leaves_the_window_edge_out_of_both_losses():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1, (2, 6, 6, 1)).astype(np.float32)
    pred = rng.uniform(0, 1, (2, 6, 6, 1)).astype(np.float32)
    loss, count = hse_loss(tf.constant(ref), tf.constant(pred), margin=2)
    centre = (slice(None), slice(2, 4), slice(2, 4))
    assert float(count) == 2 * 2 * 2
    np.testing.assert_allclose(float(loss), np.mean(np.abs(ref[centre] - pred[centre]) * np.exp(ref[centre])),
                               rtol=1e-6)
    # Changing the edge changes nothing; changing the centre does.
    edge_changed = ref.copy()
    edge_changed[:, 0] = 0.0
    assert float(hse_loss(tf.constant(edge_changed), tf.constant(pred), margin=2)[0]) == float(loss)
    assert float(hse_loss(tf.constant(edge_changed), tf.constant(pred))[0]) != float(loss)

    probs = rng.dirichlet(np.ones(17), (1, 4, 4)).astype(np.float32)
    lcz_ref = np.zeros((1, 4, 4, 17), np.float32)
    lcz_ref[0, :, :, 3] = 1.0
    loss, count = lcz_loss(tf.constant(lcz_ref), tf.constant(probs), margin=1)
    assert float(count) == 4
    np.testing.assert_allclose(float(loss), -np.mean(np.log(probs[0, 1:3, 1:3, 3])), rtol=1e-5)


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
