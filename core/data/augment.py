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


#: Central wavelengths (nm) of the model's bands B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12.
WAVELENGTHS_NM = np.array([490, 560, 665, 705, 740, 783, 842, 865, 1610, 2190], dtype=np.float32)
#: Top-of-atmosphere reflectance of thick haze, per band: bright and nearly white in the visible, darker in the
#: short-wave infrared (haze scatters short wavelengths most).
HAZE_REFLECTANCE = (0.3 * (WAVELENGTHS_NM[0] / WAVELENGTHS_NM) ** 0.5).astype(np.float32)


def atmosphere(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """image (B, H, W, 10) under another atmosphere and illumination, one draw per sample (labels untouched).

    What changes between two dates of one place on a Level-1C image: path radiance, an additive offset
    largest in the blue (Rayleigh-like, ~ wavelength^-2), drawn in [-0.01, 0.03] x strength at B2; a thin
    haze, the image blended towards HAZE_REFLECTANCE by a share that varies smoothly over the window (a 4 x 4
    random field, bilinearly upsampled), up to 0.25 x strength; and the illumination, a brightness factor
    exp(N(0, 0.1 x strength)) and a contrast factor exp(N(0, 0.1 x strength)) about the sample's mean.
    Nodata pixels (all bands 0) stay 0; reflectance stays >= 0. strength <= 0: the image itself.
    """
    if strength <= 0:
        return image
    b, h, w, c = image.shape
    valid = np.any(image != 0, axis=-1, keepdims=True)
    path = rng.uniform(-0.01, 0.03, size=(b, 1, 1, 1)) * strength * (WAVELENGTHS_NM[0] / WAVELENGTHS_NM) ** 2
    field = rng.uniform(0.0, 0.25 * strength, size=(b, 4, 4)) * (rng.random((b, 1, 1)) < 0.5)
    haze = _upsample(field, h, w)[..., None]
    mean = image.mean(axis=(1, 2), keepdims=True)
    contrast = np.exp(rng.normal(0.0, 0.1 * strength, size=(b, 1, 1, 1)))
    brightness = np.exp(rng.normal(0.0, 0.1 * strength, size=(b, 1, 1, 1)))
    out = (mean + contrast * (image - mean)) * brightness
    out = (1.0 - haze) * out + haze * HAZE_REFLECTANCE + path
    return np.where(valid, np.maximum(out, 0.0), 0.0).astype(np.float32)


def _upsample(field: np.ndarray, h: int, w: int) -> np.ndarray:
    """(B, m, n) -> (B, h, w) by bilinear interpolation between the field's points spread over the window."""
    b, m, n = field.shape
    rows, cols = np.linspace(0, m - 1, h), np.linspace(0, n - 1, w)
    r0, c0 = np.minimum(rows.astype(int), m - 2), np.minimum(cols.astype(int), n - 2)
    fr, fc = (rows - r0)[None, :, None], (cols - c0)[None, None, :]
    top = field[:, r0][:, :, c0] * (1 - fc) + field[:, r0][:, :, c0 + 1] * fc
    bottom = field[:, r0 + 1][:, :, c0] * (1 - fc) + field[:, r0 + 1][:, :, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr
