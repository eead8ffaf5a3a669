"""Accuracy metrics of the paper for HSE (MAE, binary Kappa/AA/recall/F1) and LCZ (OA, Kappa, AA, WA, OA_urb, OA_bu, F1).

Everything here is plain numpy; the confusion-matrix figure uses matplotlib, imported only when drawn.
Definitions follow docs/method.md ("Metrics"); LCZ codes are 1..17 (A..G = 11..17) and 0 means "no reference".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..common.errors import UrbanMTLError
from ..common.lcz import BUILT_CODES, LETTERS, NUM_CLASSES, OA_BU_NATURAL_CODES, WA_MATRIX

#: Slack when checking that HSE values are fractions, so float32 rounding of 0 and 1 passes.
_RANGE_TOLERANCE = 1e-4


# --- LCZ -------------------------------------------------------------------------------------------


def confusion_matrix(reference: np.ndarray, prediction: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Confusion matrix of LCZ code maps.

    reference, prediction: integer code arrays of the same shape, codes 1..num_classes, 0 = no reference /
    no prediction (such pixels are ignored). Returns (num_classes, num_classes) int64 counts; row i =
    reference code i+1, column j = predicted code j+1.
    """
    reference = np.asarray(reference)
    prediction = np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise UrbanMTLError(
            f"The LCZ reference {reference.shape} and prediction {prediction.shape} have different shapes; "
            f"bring both onto the same grid before comparing them."
        )
    for what, codes in (("reference", reference), ("prediction", prediction)):
        if codes.size and (not np.all(np.isfinite(codes)) or np.any(codes != np.round(codes))):
            raise UrbanMTLError(f"The LCZ {what} holds non-integer values; pass LCZ codes 1..{num_classes} (0 = none).")
        if codes.size and (codes.min() < 0 or codes.max() > num_classes):
            bad = codes[(codes < 0) | (codes > num_classes)].ravel()[0]
            raise UrbanMTLError(
                f"The LCZ {what} holds the code {bad:g}, outside 0..{num_classes}. Map WUDAPT codes 101..107 "
                f"with core.common.lcz.normalize_codes and use 0 for pixels without a class."
            )
    ref = reference.astype(np.int64).ravel()
    pred = prediction.astype(np.int64).ravel()
    keep = (ref > 0) & (pred > 0)
    flat = (ref[keep] - 1) * num_classes + (pred[keep] - 1)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).astype(np.int64)


def _check_lcz_cm(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.shape != (NUM_CLASSES, NUM_CLASSES):
        raise UrbanMTLError(
            f"An LCZ confusion matrix must be {NUM_CLASSES}x{NUM_CLASSES} (codes 1..{NUM_CLASSES}); got "
            f"{cm.shape}. Build it with core.evaluation.metrics.confusion_matrix."
        )
    if np.any(cm < 0):
        raise UrbanMTLError("The LCZ confusion matrix holds negative counts; it must count pixels.")
    return cm.astype(np.float64)


def _kappa(cm: np.ndarray) -> Optional[float]:
    """Cohen's Kappa of a square count matrix; None when chance agreement is 1 (a single class, all correct)."""
    n = cm.sum()
    observed = np.trace(cm) / n
    expected = float(np.sum(cm.sum(axis=1) * cm.sum(axis=0))) / (n * n)
    if expected >= 1.0:
        return None
    return float((observed - expected) / (1.0 - expected))


def lcz_metrics(cm: np.ndarray) -> dict[str, Any]:
    """The paper's LCZ metrics from a 17x17 confusion matrix (rows = reference, columns = prediction).

    Returns a JSON-able dict, every score in 0..1 (Kappa in -1..1):
    - `oa`: overall accuracy, trace / n.
    - `kappa`: Cohen's Kappa (None if undefined: one class only, all correct).
    - `aa`: average accuracy = mean recall over the classes present in the reference.
    - `wa`: weighted accuracy sum(W * CM) / sum(CM) with the similarity matrix core.common.lcz.WA_MATRIX.
    - `oa_urb`: OA within the built reference classes 1-10 (correct in those rows / all pixels in those rows);
      None if the reference has no built pixel.
    - `oa_bu`: OA of built (1-10) versus natural (A, B, C, D, F, G); pixels whose reference or prediction
      is E are left out. None if no pixel remains.
    - `f1_per_class`: {letter: F1 or None when the class is absent from reference and prediction}.
    - `confusion_matrix`: the counts as a list of 17 lists; `n`: number of pixels.
    Raises UrbanMTLError for a wrong shape or an empty matrix.
    """
    cm = _check_lcz_cm(cm)
    n = cm.sum()
    if n == 0:
        raise UrbanMTLError("The LCZ confusion matrix is empty: no pixel had both a reference and a prediction.")
    rows = cm.sum(axis=1)
    cols = cm.sum(axis=0)
    diag = np.diag(cm)
    present = rows > 0

    built = np.array(BUILT_CODES) - 1
    natural = np.array(OA_BU_NATURAL_CODES) - 1
    urban_total = rows[built].sum()
    # E is dropped from both sides, so only the built/natural blocks of the matrix count.
    bb = cm[np.ix_(built, built)].sum()
    nn = cm[np.ix_(natural, natural)].sum()
    bu_total = bb + nn + cm[np.ix_(built, natural)].sum() + cm[np.ix_(natural, built)].sum()

    f1: dict[str, Optional[float]] = {}
    for k, letter in enumerate(LETTERS):
        denominator = rows[k] + cols[k]
        f1[letter] = float(2.0 * diag[k] / denominator) if denominator > 0 else None

    return {
        "oa": float(diag.sum() / n),
        "kappa": _kappa(cm),
        "aa": float(np.mean(diag[present] / rows[present])),
        "wa": float(np.sum(WA_MATRIX * cm) / n),
        "oa_urb": float(diag[built].sum() / urban_total) if urban_total > 0 else None,
        "oa_bu": float((bb + nn) / bu_total) if bu_total > 0 else None,
        "f1_per_class": f1,
        "confusion_matrix": [[int(v) for v in row] for row in cm],
        "n": int(n),
    }


# --- HSE -------------------------------------------------------------------------------------------


class _HSECounts:
    """Running sums behind the HSE metrics: absolute errors and the binary built/not-built table."""

    def __init__(self, threshold: float) -> None:
        if not 0.0 < threshold <= 1.0:
            raise UrbanMTLError(
                f"The HSE threshold {threshold} must lie in (0, 1]: it splits built (HSE >= threshold) from "
                f"not built. The paper's choice is 0.5."
            )
        self.threshold = float(threshold)
        self.abs_error_sum = 0.0
        self.n = 0
        self.tp = self.fp = self.fn = self.tn = 0

    def update(self, reference: np.ndarray, prediction: np.ndarray) -> None:
        """Add pixels; reference NaN (or a non-finite prediction) = no reference. Values are fractions 0..1."""
        reference = np.asarray(reference, dtype=np.float64)
        prediction = np.asarray(prediction, dtype=np.float64)
        if reference.shape != prediction.shape:
            raise UrbanMTLError(
                f"The HSE reference {reference.shape} and prediction {prediction.shape} have different shapes; "
                f"compare them on the same 20 m grid."
            )
        valid = np.isfinite(reference) & np.isfinite(prediction)
        ref = reference[valid]
        pred = prediction[valid]
        if ref.size == 0:
            return
        for what, values in (("reference", ref), ("prediction", pred)):
            low, high = float(values.min()), float(values.max())
            if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
                raise UrbanMTLError(
                    f"The HSE {what} holds values from {low:g} to {high:g}; HSE must be a fraction 0..1. "
                    f"Divide percentages by 100 and mark nodata (e.g. 254/255) as NaN."
                )
        self.abs_error_sum += float(np.abs(ref - pred).sum())
        self.n += int(ref.size)
        ref_built = ref >= self.threshold
        pred_built = pred >= self.threshold
        self.tp += int(np.count_nonzero(ref_built & pred_built))
        self.fp += int(np.count_nonzero(~ref_built & pred_built))
        self.fn += int(np.count_nonzero(ref_built & ~pred_built))
        self.tn += int(np.count_nonzero(~ref_built & ~pred_built))

    def merge(self, other: "_HSECounts") -> None:
        self.abs_error_sum += other.abs_error_sum
        self.n += other.n
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn

    def metrics(self) -> dict[str, Any]:
        if self.n == 0:
            raise UrbanMTLError("No HSE pixel had both a reference and a prediction; there is nothing to score.")
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        recall = tp / (tp + fn) if tp + fn else None
        specificity = tn / (tn + fp) if tn + fp else None
        precision = tp / (tp + fp) if tp + fp else None
        # Like the LCZ AA: the mean over the classes the reference actually contains.
        recalls = [r for r in (recall, specificity) if r is not None]
        binary = np.array([[tn, fp], [fn, tp]], dtype=np.float64)
        return {
            "mae_pp": 100.0 * self.abs_error_sum / self.n,
            "kappa": _kappa(binary),
            "aa": float(np.mean(recalls)),
            "recall": recall,
            "precision": precision,
            "f1": 2.0 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
            "specificity": specificity,
            "threshold": self.threshold,
            "counts": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
            "n": self.n,
        }


def hse_metrics(reference: np.ndarray, prediction: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """The paper's HSE metrics of a density prediction against a density reference.

    reference, prediction: arrays of the same shape, fractions 0..1 (NaN = no reference, ignored).
    Returns a JSON-able dict:
    - `mae_pp`: mean absolute error in percentage points (|reference - prediction| x 100, averaged).
    - after thresholding both (built = value >= threshold): `kappa` (Cohen, None if undefined),
      `aa` (mean of the recall of built and of not built, over those present in the reference),
      `recall` (built; None without built reference), `precision` (None if nothing is predicted built),
      `f1` (None if neither has built pixels), plus `specificity`, `threshold`, `counts` {tp, fp, fn, tn}.
    - `n`: number of compared pixels.
    Raises UrbanMTLError when shapes differ, values are not fractions, or no pixel has a reference.
    """
    counts = _HSECounts(threshold)
    counts.update(reference, prediction)
    return counts.metrics()


# --- streaming over batches --------------------------------------------------------------------------


def upsample_codes(codes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling of (B, h, w) code maps to (B, H, W), H and W integer multiples of h and w.

    Each coarse pixel covers a block of fine pixels; for a x2 step this equals taking the argmax of
    nearest-repeated probabilities, which is why the LCZ argmax can be taken on the coarse grid first.
    """
    h, w = codes.shape[1:3]
    height, width = shape
    if h == 0 or w == 0 or height % h or width % w:
        raise UrbanMTLError(
            f"The LCZ label grid {height}x{width} is not an integer multiple of the prediction grid {h}x{w}; "
            f"labels must be at 10 m and the image height and width multiples of 8."
        )
    return np.repeat(np.repeat(codes, height // h, axis=1), width // w, axis=2)


class MetricAccumulator:
    """Streams batches into confusion matrices and error sums; never keeps the pixels.

    Batch conventions (core.data and core.network.inference.predict_batch):
    - y = {"hse": (B, H/2, W/2, 1) fractions, NaN = no reference; "lcz": (B, H, W, 17) probabilities at 10 m,
      an all-zero row = no reference}; either key may be missing.
    - pred = {"hse": (B, H/2, W/2) or (B, H/2, W/2, 1) fractions; "lcz": (B, H/2, W/2, 17) probabilities at 20 m}.
    LCZ is compared on the 10 m label grid: the predicted class (argmax) of each 20 m pixel is repeated over its
    2x2 label pixels (nearest upsampling); the reference class is the argmax of the soft label. HSE is compared
    on the 20 m grid.
    """

    def __init__(self, hse_threshold: float = 0.5) -> None:
        self.hse_threshold = float(hse_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen (e.g. at the start of a validation epoch)."""
        self._hse = _HSECounts(self.hse_threshold)
        self.lcz_cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)

    def update(self, y: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray]) -> None:
        """Add one batch; a task counts only if both the references and the predictions have it."""
        if "hse" in y and "hse" in pred:
            self._hse.update(_drop_channel(y["hse"]), _drop_channel(pred["hse"]))
        if "lcz" in y and "lcz" in pred:
            self.lcz_cm += lcz_batch_confusion(y["lcz"], pred["lcz"])

    def merge(self, other: "MetricAccumulator") -> None:
        """Add the counts of another accumulator (same threshold), e.g. per-dataset into overall."""
        if other.hse_threshold != self.hse_threshold:
            raise UrbanMTLError("Cannot merge metric accumulators that use different HSE thresholds.")
        self._hse.merge(other._hse)
        self.lcz_cm += other.lcz_cm

    @property
    def n_hse(self) -> int:
        return self._hse.n

    @property
    def n_lcz(self) -> int:
        return int(self.lcz_cm.sum())

    def result(self) -> dict[str, dict[str, Any]]:
        """{"hse": hse_metrics-style dict, "lcz": lcz_metrics dict}; a task without any referenced pixel is absent."""
        out: dict[str, dict[str, Any]] = {}
        if self._hse.n:
            out["hse"] = self._hse.metrics()
        if self.lcz_cm.sum():
            out["lcz"] = lcz_metrics(self.lcz_cm)
        return out


def _drop_channel(values: np.ndarray) -> np.ndarray:
    """(B, h, w, 1) -> (B, h, w); (B, h, w) unchanged."""
    values = np.asarray(values)
    return values[..., 0] if values.ndim == 4 and values.shape[-1] == 1 else values


def lcz_batch_confusion(reference: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """17x17 confusion counts of one batch: reference (B, H, W, 17) soft labels at 10 m (all-zero row = none)
    against predicted probabilities (B, h, w, 17) on a grid H/h times coarser (nearest upsampling)."""
    reference = np.asarray(reference)
    probabilities = np.asarray(probabilities)
    if reference.ndim != 4 or probabilities.ndim != 4 or reference.shape[-1] != NUM_CLASSES \
            or probabilities.shape[-1] != NUM_CLASSES or reference.shape[0] != probabilities.shape[0]:
        raise UrbanMTLError(
            f"LCZ batches must be (B, H, W, {NUM_CLASSES}) references and (B, h, w, {NUM_CLASSES}) probabilities; "
            f"got {reference.shape} and {probabilities.shape}."
        )
    ref_codes = np.where(reference.sum(axis=-1) > 0, reference.argmax(axis=-1) + 1, 0)
    pred_codes = upsample_codes(probabilities.argmax(axis=-1) + 1, reference.shape[1:3])
    return confusion_matrix(ref_codes, pred_codes)


# --- figure --------------------------------------------------------------------------------------------


def _compact_count(value: int) -> str:
    """Counts short enough for a cell: 950, 12k, 3.4M."""
    if value < 1000:
        return str(value)
    if value < 10_000:
        return f"{value / 1000:.1f}k"
    if value < 1_000_000:
        return f"{value // 1000}k"
    return f"{value / 1e6:.1f}M"


def plot_confusion_matrix(cm: np.ndarray, path: str | os.PathLike, title: str = "LCZ confusion matrix") -> Path:
    """Write a PNG of a 17x17 LCZ confusion matrix: colours = share of each reference row (0..1), each
    non-empty cell labelled with its pixel count, LCZ letters on both axes, reference rows without pixels greyed.

    Returns the path written. Uses matplotlib's Agg canvas directly, so no GUI backend or pyplot state is touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = _check_lcz_cm(cm)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    shown = np.ma.masked_where(np.broadcast_to(rows == 0, share.shape), share)

    fig = Figure(figsize=(9.5, 8.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = _blues()
    cmap.set_bad("#e6e6e6")
    image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    colorbar.set_label("share of the reference row")

    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            value = int(counts[i, j])
            if value:
                ax.text(j, i, _compact_count(value), ha="center", va="center", fontsize=6.5,
                        color="white" if share[i, j] > 0.55 else "black")
    ticks = np.arange(NUM_CLASSES)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(LETTERS)
    # Each row's reference total beside its letter, so shares of small rows are not over-read.
    ax.set_yticklabels([f"{letter} (n={_compact_count(int(total))})" if total else letter
                        for letter, total in zip(LETTERS, rows[:, 0])])
    ax.set_xlabel("Predicted LCZ")
    ax.set_ylabel("Reference LCZ")
    # A line between built (1-10) and natural (A-G) classes.
    ax.axhline(9.5, color="#888888", linewidth=0.8)
    ax.axvline(9.5, color="#888888", linewidth=0.8)
    ax.set_title(title)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _blues():
    """A copy of matplotlib's 'Blues' colour map (copied so setting its 'bad' colour changes no global state)."""
    import matplotlib

    return matplotlib.colormaps["Blues"].copy()
