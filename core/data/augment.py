"""Training augmentation: the 8 flips/rotations of a square patch, and a per-band spectral jitter."""

from __future__ import annotations

import numpy as np

#: Number of distinct dihedral transforms of a square (4 rotations, each with or without a flip).
NUM_TRANSFORMS = 8


def dihedral(array: np.ndarray, k: int) -> np.ndarray:
    """Transform k (0..7) of a square array (S, S, ...) over its first two axes.

    k % 4 quarter turns counter-clockwise, then for k >= 4 a left-right flip; k = 0 is the identity.
    Because the 20 m grid tiles the 10 m grid in whole 2x2 blocks, applying the same k to an image
    (P, P, C) and to its HSE (P/2, P/2, 1) keeps every 20 m pixel over the same four image pixels.
    """
    if not 0 <= k < NUM_TRANSFORMS:
        raise ValueError(f"transform index must be 0..7, got {k}")
    out = np.rot90(array, k % 4, axes=(0, 1))
    if k >= 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def augment_sample(
    image: np.ndarray, hse: np.ndarray, lcz: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same dihedral transform k applied to one sample: image (P,P,10), hse (P/2,P/2,1), lcz (P,P,17)."""
    return dihedral(image, k), dihedral(hse, k), dihedral(lcz, k)


def spectral_jitter(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """image (B, H, W, C) times a factor N(1, sigma) per sample and band (labels untouched).

    Mimics calibration and atmospheric differences between scenes; nodata pixels are 0 and stay 0.
    """
    if sigma <= 0:
        return image
    factors = rng.normal(1.0, sigma, size=(image.shape[0], 1, 1, image.shape[-1])).astype(np.float32)
    # A negative factor would turn reflectance negative: no sensor error does that.
    factors = np.maximum(factors, np.float32(0))
    return (image * factors).astype(np.float32, copy=False)
