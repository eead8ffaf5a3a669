"""core.evaluation.metrics against confusion matrices and HSE pixels worked out by hand (the numbers are written out below)."""

from __future__ import annotations

import numpy as np
import pytest

from core.common.errors import UrbanMTLError
from core.common.lcz import LETTERS
from core.evaluation.metrics import (
    MetricAccumulator, confusion_matrix, hse_metrics, lcz_batch_confusion, lcz_metrics, plot_confusion_matrix,
)

# Three reference classes (2 compact midrise, D low plants, G water); predictions also use 6 and E.
#   reference 2 (10 px): predicted 2 x6, 6 x2, D x2
#   reference D (10 px): predicted D x7, 2 x1, E x2
#   reference G ( 5 px): predicted G x4, D x1
# n = 25, correct = 6 + 7 + 4 = 17.
# Column totals: 2 -> 7, 6 -> 2, D -> 10, E -> 2, G -> 4.
PAIRS = {(2, 2): 6, (2, 6): 2, (2, 14): 2, (14, 14): 7, (14, 2): 1, (14, 15): 2, (17, 17): 4, (17, 14): 1}


def hand_cm() -> np.ndarray:
    cm = np.zeros((17, 17), dtype=np.int64)
    for (ref, pred), count in PAIRS.items():
        cm[ref - 1, pred - 1] = count
    return cm


def code_maps() -> tuple[np.ndarray, np.ndarray]:
    """The same pixels as two code maps (5 x 6, with 5 unlabelled pixels = 0 and a shuffled order)."""
    ref, pred = [], []
    for (r, p), count in PAIRS.items():
        ref += [r] * count
        pred += [p] * count
    ref += [0, 0, 0, 5, 0]          # no reference (0) or no prediction (0): ignored
    pred += [3, 0, 17, 0, 0]
    order = np.random.default_rng(1).permutation(len(ref))
    return np.array(ref)[order].reshape(5, 6), np.array(pred)[order].reshape(5, 6)


def test_confusion_matrix_counts_and_ignores_zero():
    ref, pred = code_maps()
    cm = confusion_matrix(ref, pred)
    assert cm.shape == (17, 17) and cm.dtype == np.int64
    np.testing.assert_array_equal(cm, hand_cm())


def test_confusion_matrix_rejects_bad_codes_and_shapes():
    with pytest.raises(UrbanMTLError, match="101"):
        confusion_matrix(np.array([1, 101]), np.array([1, 2]))
    with pytest.raises(UrbanMTLError, match="different shapes"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(UrbanMTLError, match="non-integer"):
        confusion_matrix(np.array([1.5]), np.array([1.0]))


def test_lcz_metrics_by_hand():
    m = lcz_metrics(hand_cm())
    assert m["n"] == 25
    assert m["oa"] == pytest.approx(17 / 25)                       # 0.68
    # Chance agreement: (row x column totals) 2: 10*7, D: 10*10, G: 5*4 -> 190 / 625 = 0.304.
    assert m["kappa"] == pytest.approx((0.68 - 0.304) / (1 - 0.304))  # 0.5402
    # AA over the three reference classes only: (6/10 + 7/10 + 4/5) / 3.
    assert m["aa"] == pytest.approx(0.7)
    # WA in twelfths: W[2,2]=12 x6, W[2,6]=7 x2, W[2,D]=1 x2, W[D,D]=12 x7, W[D,2]=1 x1, W[D,E]=9 x2,
    # W[G,G]=12 x4, W[G,D]=11 x1 -> 72+14+2+84+1+18+48+11 = 250 -> 250 / 12 / 25.
    assert m["wa"] == pytest.approx(250 / 300)
    # OA_urb: only reference row 2 is built: 6 correct of 10.
    assert m["oa_urb"] == pytest.approx(0.6)
    # OA_bu: the 2 pixels predicted E drop out (23 left). Built->built 6+2, natural->natural 7 + 4 + 1 = 12,
    # wrong: 2 built->D, 1 D->2. (8 + 12) / 23.
    assert m["oa_bu"] == pytest.approx(20 / 23)
    f1 = m["f1_per_class"]
    assert set(f1) == set(LETTERS)
    assert f1["2"] == pytest.approx(2 * 6 / (10 + 7))                # 0.7059
    assert f1["6"] == 0.0                                          # predicted only
    assert f1["D"] == pytest.approx(2 * 7 / (10 + 10))             # 0.7
    assert f1["E"] == 0.0
    assert f1["G"] == pytest.approx(2 * 4 / (5 + 4))               # 0.8889
    assert f1["1"] is None and f1["A"] is None                     # absent from both
    assert m["confusion_matrix"] == hand_cm().tolist()


def test_lcz_metrics_undefined_parts():
    # Only natural classes, and only E predicted for A: OA_urb undefined, OA_bu has no pixel left.
    cm = np.zeros((17, 17), dtype=np.int64)
    cm[10, 14] = 3                          # reference A, predicted E
    m = lcz_metrics(cm)
    assert m["oa_urb"] is None and m["oa_bu"] is None
    assert m["oa"] == 0.0 and m["aa"] == 0.0
    assert m["wa"] == pytest.approx(5 / 12)  # W[A,E] = 5
    # A single class, all correct: Kappa is 0/0 -> None, not a made-up number.
    cm = np.zeros((17, 17), dtype=np.int64)
    cm[16, 16] = 9
    m = lcz_metrics(cm)
    assert m["kappa"] is None and m["oa"] == 1.0 and m["wa"] == 1.0 and m["oa_bu"] == 1.0
    with pytest.raises(UrbanMTLError, match="empty"):
        lcz_metrics(np.zeros((17, 17)))
    with pytest.raises(UrbanMTLError, match="17x17"):
        lcz_metrics(np.ones((3, 3)))


def test_oa_bu_counts_e_reference_out():
    # Reference E predicted 2 must not count; reference 9 predicted A is a built->natural error.
    cm = np.zeros((17, 17), dtype=np.int64)
    cm[14, 1] = 5       # E -> 2
    cm[8, 10] = 1       # 9 -> A
    cm[8, 8] = 3        # 9 -> 9
    m = lcz_metrics(cm)
    assert m["oa_bu"] == pytest.approx(3 / 4)
    assert m["oa_urb"] == pytest.approx(3 / 4)
    assert m["oa"] == pytest.approx(3 / 9)


# HSE: six pixels, the last without reference.
#   reference  0.0  0.2  0.6  0.9  0.5  NaN
#   prediction 0.1  0.6  0.4  1.0  0.5  0.3
# |error| = 0.1 0.4 0.2 0.1 0.0 -> mean 0.16 -> 16 percentage points.
# Built at 0.5: reference F F T T T, prediction F T F T T -> tp 2, fp 1, fn 1, tn 1.
HSE_REF = np.array([0.0, 0.2, 0.6, 0.9, 0.5, np.nan])
HSE_PRED = np.array([0.1, 0.6, 0.4, 1.0, 0.5, 0.3])


def test_hse_metrics_by_hand():
    m = hse_metrics(HSE_REF, HSE_PRED)
    assert m["n"] == 5
    assert m["mae_pp"] == pytest.approx(16.0)
    assert m["counts"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 1}
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["aa"] == pytest.approx((2 / 3 + 1 / 2) / 2)          # 7/12
    # po = 3/5, pe = (3*3 + 2*2) / 25 = 0.52 -> (0.6 - 0.52) / 0.48 = 1/6.
    assert m["kappa"] == pytest.approx(1 / 6)


def test_hse_threshold_moves_the_binary_split():
    m = hse_metrics(HSE_REF, HSE_PRED, threshold=0.3)
    # Built at 0.3: reference F F T T T, prediction F T T T T -> tp 3, fp 1, fn 0, tn 1.
    assert m["counts"] == {"tp": 3, "fp": 1, "fn": 0, "tn": 1}
    assert m["recall"] == 1.0 and m["precision"] == pytest.approx(0.75)
    assert m["mae_pp"] == pytest.approx(16.0)


def test_hse_metrics_errors_and_undefined():
    with pytest.raises(UrbanMTLError, match="fraction 0..1"):
        hse_metrics(np.array([40.0, 80.0]), np.array([0.4, 0.8]))
    with pytest.raises(UrbanMTLError, match="nothing to score"):
        hse_metrics(np.array([np.nan]), np.array([0.2]))
    with pytest.raises(UrbanMTLError, match="threshold"):
        hse_metrics(HSE_REF, HSE_PRED, threshold=0.0)
    # No built reference: recall undefined, AA = the not-built recall alone.
    m = hse_metrics(np.array([0.1, 0.2]), np.array([0.1, 0.7]))
    assert m["recall"] is None and m["aa"] == pytest.approx(0.5) and m["f1"] == 0.0


def test_accumulator_equals_one_shot_and_omits_absent_tasks():
    acc = MetricAccumulator()
    assert acc.result() == {}
    # HSE batches (B, 1, 3, 1) against predictions (B, 1, 3): the six hand pixels split over two batches.
    y_hse = HSE_REF.reshape(2, 1, 3, 1)
    p_hse = HSE_PRED.reshape(2, 1, 3)
    for b in range(2):
        acc.update({"hse": y_hse[b:b + 1]}, {"hse": p_hse[b:b + 1]})
    assert set(acc.result()) == {"hse"}
    assert acc.result()["hse"] == hse_metrics(HSE_REF, HSE_PRED)
    # A batch whose LCZ reference is all zero adds no task.
    acc.update({"lcz": np.zeros((1, 4, 4, 17))}, {"lcz": np.full((1, 2, 2, 17), 1 / 17)})
    assert "lcz" not in acc.result()
    # A task only in the references (model without LCZ) is skipped, not an error.
    acc.update({"lcz": np.ones((1, 4, 4, 17))}, {"hse": np.zeros((1, 2, 2))})
    assert "lcz" not in acc.result()


def test_lcz_batch_upsamples_prediction_to_label_grid():
    # Prediction 1 x 2 x 2 at 20 m: classes 2, D / G, 6. Labels 4 x 4 at 10 m.
    probs = np.zeros((1, 2, 2, 17), dtype=np.float32)
    for (i, j), code in {(0, 0): 2, (0, 1): 14, (1, 0): 17, (1, 1): 6}.items():
        probs[0, i, j, code - 1] = 0.6
        probs[0, i, j, (code % 17)] = 0.4          # a runner-up that must not win
    ref = np.zeros((1, 4, 4, 17), dtype=np.float32)
    ref[0, :2, :2, 1] = 1.0                        # 2 under the top-left prediction (2): 4 correct
    ref[0, :2, 2:, 13] = 0.7                       # soft D under D: 4 correct ...
    ref[0, :2, 2:, 16] = 0.3
    ref[0, 0, 3] = 0.0                             # ... but one pixel has no reference -> 3
    ref[0, 2:, :2, 16] = 1.0                       # G under G: 4 correct
    ref[0, 2:, 2:, 13] = 1.0                       # D under 6: 4 wrong
    cm = lcz_batch_confusion(ref, probs)
    assert cm.sum() == 15
    assert cm[1, 1] == 4 and cm[13, 13] == 3 and cm[16, 16] == 4 and cm[13, 5] == 4
    acc = MetricAccumulator()
    acc.update({"lcz": ref}, {"lcz": probs})
    assert acc.result()["lcz"]["oa"] == pytest.approx(11 / 15)
    with pytest.raises(UrbanMTLError, match="integer multiple"):
        lcz_batch_confusion(np.ones((1, 5, 5, 17)), probs)


def test_accumulator_merge_and_reset():
    a, b = MetricAccumulator(), MetricAccumulator()
    a.update({"hse": HSE_REF[:3].reshape(1, 1, 3, 1)}, {"hse": HSE_PRED[:3].reshape(1, 1, 3, 1)})
    b.update({"hse": HSE_REF[3:].reshape(1, 1, 3, 1)}, {"hse": HSE_PRED[3:].reshape(1, 1, 3, 1)})
    a.merge(b)
    assert a.result()["hse"] == hse_metrics(HSE_REF, HSE_PRED)
    a.reset()
    assert a.result() == {}
    with pytest.raises(UrbanMTLError, match="thresholds"):
        a.merge(MetricAccumulator(hse_threshold=0.3))


def test_plot_confusion_matrix_writes_png(tmp_path):
    path = plot_confusion_matrix(hand_cm() * 1234, tmp_path / "sub" / "cm.png", "LCZ test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 600 and pixels.shape[1] > 600
    with pytest.raises(UrbanMTLError):
        plot_confusion_matrix(np.ones((3, 3)), tmp_path / "bad.png", "bad")
