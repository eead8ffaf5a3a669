"""The Dataset interface shared by every reader, and the sample conventions all of them produce.

A sample is three float32 arrays of one square patch of side P (a multiple of 8) at 10 m:

- ``image``: (P, P, 10) reflectance in MODEL_BANDS order, (DN + offset) / 10000; image nodata pixels are
  filled from their valid neighbours (`core.inputs.fill`), exactly as the inference reader fills them.
- ``hse``: (P/2, P/2, 1) HSE density 0..1 on the 20 m grid aligned with the image (20 m pixel (i, j) covers
  image pixels 2i..2i+1, 2j..2j+1); NaN = no reference (reference nodata, image nodata, or no HSE at all).
- ``lcz``: (P, P, 17) LCZ class probabilities at 10 m, channel k-1 = LCZ k, each row summing to 1 (one-hot or
  soft); an all-zero row = no reference.

Readers return batches of these stacked on a leading axis B, all from one Dataset.
"""

from __future__ import annotations

import abc
import threading
from typing import Any, Optional, Sequence

import numpy as np

from ..common.bands import MODEL_BANDS
from ..common.errors import UrbanMTLError
from ..inputs.fill import fill_invalid
from ..common.lcz import NUM_CLASSES

#: Bands per image pixel (MODEL_BANDS).
NUM_BANDS = len(MODEL_BANDS)
#: Patch sides must be multiples of this (three 2x2 poolings in the network).
PATCH_MULTIPLE = 8
#: A training window with more than this share of image nodata pixels is drawn again.
MAX_NODATA_SHARE = 0.5


def check_patch_size(patch_size: Any, source: str = "patch_size") -> int:
    """`patch_size` as an int, or UrbanMTLError unless it is a positive multiple of 8 (pixels at 10 m)."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)):
        raise UrbanMTLError(
            f"{source} must be a whole number of 10 m pixels, got {patch_size!r}. Use e.g. 128."
        )
    if patch_size <= 0 or patch_size % PATCH_MULTIPLE:
        raise UrbanMTLError(
            f"{source} is {patch_size}, but patches must be a positive multiple of {PATCH_MULTIPLE} pixels "
            f"(the network pools three times by 2). Use e.g. {max(PATCH_MULTIPLE, int(patch_size) // 8 * 8)} "
            f"or 128."
        )
    return int(patch_size)


def renormalize_rows(probs: np.ndarray) -> np.ndarray:
    """Rows of the last axis scaled to sum 1; rows that sum to 0 or hold non-finite/negative values -> all 0.

    probs: (..., 17) non-negative class scores in any scale (e.g. uint8 x 255). Returns float32 (..., 17).
    """
    probs = np.asarray(probs, dtype=np.float32)
    bad = ~np.all(np.isfinite(probs), axis=-1) | np.any(probs < 0, axis=-1)
    probs = np.where(bad[..., None], np.float32(0), probs)
    total = probs.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, probs / total, np.float32(0))
    return out.astype(np.float32, copy=False)


def codes_to_onehot(codes: np.ndarray) -> np.ndarray:
    """One-hot LCZ probabilities (..., 17) float32 from LCZ codes 1..17 (0 or anything else -> all-zero row)."""
    codes = np.asarray(codes)
    out = np.zeros(codes.shape + (NUM_CLASSES,), dtype=np.float32)
    valid = (codes >= 1) & (codes <= NUM_CLASSES)
    idx = np.nonzero(valid)
    out[idx + (codes[valid].astype(np.intp) - 1,)] = 1.0
    return out


def block_mean_2x2(values: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block over axes (1, 2), ignoring NaN; NaN where all four are NaN.

    values: (B, H, W) float with H, W even. Returns (B, H/2, W/2) float32. Used to bring 10 m HSE to 20 m.
    """
    values = np.asarray(values, dtype=np.float32)
    b, h, w = values.shape
    blocks = values.reshape(b, h // 2, 2, w // 2, 2)
    valid = np.isfinite(blocks)
    count = valid.sum(axis=(2, 4))
    total = np.where(valid, blocks, 0).sum(axis=(2, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)


def any_2x2(mask: np.ndarray) -> np.ndarray:
    """(B, H/2, W/2) bool: True where any pixel of the 2x2 block of a (B, H, W) bool mask is True."""
    b, h, w = mask.shape
    return mask.reshape(b, h // 2, 2, w // 2, 2).any(axis=(2, 4))


def apply_image_nodata(
    image: np.ndarray, hse: np.ndarray, lcz: np.ndarray, nodata: np.ndarray, fill: bool = True
) -> None:
    """In place: image nodata pixels drop out of `lcz` (zero rows) and of `hse`, and (with `fill`) are filled
    from their valid neighbours in `image` as the inference reader fills them (`core.inputs.fill.fill_invalid`).

    image (B, P, P, 10), hse (B, P/2, P/2, 1), lcz (B, P, P, 17), nodata (B, P, P) bool. A 20 m HSE pixel loses
    its reference when any of its four image pixels is nodata: its density would describe pixels the
    network never sees.
    """
    if not nodata.any():
        return
    if fill:
        for i in range(image.shape[0]):
            fill_invalid(image[i], ~nodata[i])
    lcz[nodata] = 0.0
    hse[any_2x2(nodata)] = np.nan


class Dataset(abc.ABC):
    """One source of training/evaluation samples: a patch file or a scene, or a split part of one.

    Attributes: ``name`` (short label), ``format`` ("authors", "so2sat", "eurosat", "scene"), ``path``
    (the file read), ``patch_size`` (side P of every sample in 10 m pixels), ``has_hse`` / ``has_lcz`` (which
    tasks have a reference at all).

    ``len(dataset)`` is the number of samples of one training epoch. Subclasses implement the sampling
    plan (`_plan`) and the reading (`_read`); `core.data.iterate_batches` drives them.
    """

    name: str
    format: str
    path: str
    patch_size: int
    has_hse: bool
    has_lcz: bool

    def __init__(self) -> None:
        # Readers hold open file handles; the lock keeps one Dataset from being read from two threads
        # at once (tf.data runs generators on its own threads, and GDAL/h5py handles are not shareable).
        self._lock = threading.Lock()

    @abc.abstractmethod
    def __len__(self) -> int:
        """Samples in one training epoch (at least 1)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for the model card: format, path, units, patches, tasks, bands/layout."""

    @abc.abstractmethod
    def split(self, val_fraction: float, seed: int) -> tuple["Dataset", "Dataset"]:
        """(training part, validation part), disjoint; see the subclasses for the unit of the split."""

    @abc.abstractmethod
    def num_eval_samples(self) -> int:
        """Samples of one pass with training=False (every patch or tile once)."""

    @abc.abstractmethod
    def _plan(self, training: bool, rng: Optional[np.random.Generator]) -> list[Any]:
        """The units (patch indices, windows) of one pass, in the order they are to be read."""

    @abc.abstractmethod
    def _read(
        self, units: Sequence[Any], training: bool, rng: Optional[np.random.Generator]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image (B,P,P,10), hse (B,P/2,P/2,1), lcz (B,P,P,17)) float32 for `units`, in that order."""

    def read_units(
        self, units: Sequence[Any], training: bool = False, rng: Optional[np.random.Generator] = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Thread-safe `_read`: the samples of `units` (from `_plan`) as (image, hse, lcz) float32 arrays."""
        with self._lock:
            return self._read(units, training, rng)

    def patch_labels(self) -> Optional[list[str]]:
        """Human scene label of every sample in evaluation order, where the source has one (EuroSAT)."""
        return None

    def tasks(self) -> list[str]:
        """The tasks with a reference: a sublist of ["hse", "lcz"]."""
        return [t for t, has in (("hse", self.has_hse), ("lcz", self.has_lcz)) if has]

    def close(self) -> None:
        """Close open file handles (they are reopened on the next read)."""

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, format={self.format!r}, "
                f"patch_size={self.patch_size}, tasks={self.tasks()}, len={len(self)})")


def check_val_fraction(val_fraction: float, units: int, what: str, source: str, hint: str = "") -> int:
    """Number of `what` units for validation: round(val_fraction * units), at least 1 and at most units-1.

    Raises UrbanMTLError when val_fraction is not in (0, 1) or there are fewer than 2 units to split.
    """
    try:
        fraction = float(val_fraction)
    except (TypeError, ValueError):
        fraction = float("nan")
    if not 0.0 < fraction < 1.0:
        raise UrbanMTLError(
            f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}. Use e.g. 0.2."
        )
    if units < 2:
        raise UrbanMTLError(
            f"{source} has only {units} {what}, too few to split into training and validation. "
            f"Give separate validation data (val_data) or more data{(' ' + hint) if hint else ''}."
        )
    return int(min(max(round(fraction * units), 1), units - 1))
