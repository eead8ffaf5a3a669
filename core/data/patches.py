"""Readers of HDF5 patch files: the authors' training files, So2Sat LCZ42 and the shared EuroSAT teacher file.

Every file is read patch by patch with h5py (a 50 GB So2Sat file is never loaded whole): a batch reads its
patch indices sorted, in runs of consecutive indices, and is put back in the requested order.

Formats (datasets inside the HDF5 file; N patches of S x S pixels at 10 m, S a multiple of 8):

- ``authors`` (Qiu et al.'s public training files): ``x`` (N, S, S, 10) reflectance in MODEL_BANDS order
  (an integer x is read as DN / 10000); ``y_0`` HSE in percent, (N, S/2, S/2, 1) at 20 m or (N, S, S, 1) at
  10 m (averaged to 20 m), values outside 0..100 or NaN (e.g. HRL 254/255) = no reference; ``y_1`` one-hot or
  soft LCZ (N, S, S, 17). Either label may be missing: that task then has no reference.
- ``so2sat`` (So2Sat LCZ42 training/validation/testing.h5): ``sen2`` (N, 32, 32, 10) reflectance in
  MODEL_BANDS order, ``label`` (N, 17) one-hot, one LCZ per patch broadcast to every pixel; no HSE.
  (``sen1`` is ignored.)
- ``eurosat`` (shared/data/eurosat/eurosat_s2_teacher.h5): ``x`` uint16 (N, 64, 64, 13) DN in EuroSAT band
  order (B8A last; the ``band_names`` attribute when present, else bands.LAYOUTS["EUROSAT"]) -> DN / 10000;
  ``lcz_prob`` uint8 (N, 64, 64, 17) = p x 255, renormalised so each pixel sums to 1; ``hse`` uint8 (N, 64, 64)
  = HSE x 255 at 10 m, averaged over 2x2 to 20 m; ``eurosat_class`` int (N,) indexing the ``class_names``
  attribute (human scene labels, see `Dataset.patch_labels`).

Image nodata (any band non-finite, or all bands 0) is filled from its valid neighbours (core.inputs.fill) and drops out
of both references.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

import h5py
import numpy as np

from ..common.bands import LAYOUTS, MODEL_BANDS, dn_to_reflectance, resolve_band_indices
from ..common.errors import UrbanMTLError
from ..common.lcz import NUM_CLASSES
from .base import (
    NUM_BANDS,
    PATCH_MULTIPLE,
    Dataset,
    apply_image_nodata,
    block_mean_2x2,
    check_val_fraction,
    renormalize_rows,
)
from .h5_io import open_h5, read_rows


def _to_reflectance(x: np.ndarray) -> np.ndarray:
    """float32 reflectance from stored values: integers are DN (/ 10000), floats already reflectance."""
    if np.issubdtype(x.dtype, np.integer):
        return dn_to_reflectance(x)
    return np.asarray(x, dtype=np.float32)


def _image_nodata(image: np.ndarray) -> np.ndarray:
    """(B, S, S) bool: pixels with a non-finite band, or with every band exactly 0 (a fill value)."""
    return ~np.all(np.isfinite(image), axis=-1) | np.all(image == 0, axis=-1)


def _fraction_or_nan(values: np.ndarray, scale: float, upper: float) -> np.ndarray:
    """values x scale as float32 where 0 <= values <= upper and finite, NaN elsewhere (nodata codes)."""
    values = np.asarray(values, dtype=np.float32)
    valid = np.isfinite(values) & (values >= 0) & (values <= upper)
    return np.where(valid, values * np.float32(scale), np.nan).astype(np.float32)


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PatchDataset(Dataset):
    """A set of equally sized square patches in one HDF5 file (or a split part of it: `indices`)."""

    #: HDF5 dataset holding the images.
    image_key = "x"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        self.name = Path(self.path).stem
        self._file: Optional[h5py.File] = None
        self.subset: Optional[str] = None
        self.split_info: Optional[dict[str, Any]] = None
        with open_h5(self.path) as f:
            self._inspect(f)
        if self.num_in_file < 1:
            raise UrbanMTLError(f"'{self.path}' holds no patches. Give a file with at least one patch.")
        self.indices = np.arange(self.num_in_file, dtype=np.int64)

    # --- what each format defines ---

    def _inspect(self, f: h5py.File) -> None:
        """Check the file's layout; set num_in_file, patch_size, has_hse, has_lcz and the band mapping."""
        raise NotImplementedError

    def _load(self, f: h5py.File, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, hse, lcz) float32 of patches `indices` (in that order), before nodata masking."""
        raise NotImplementedError

    # --- shared checks ---

    def _require(self, f: h5py.File, *keys: str) -> None:
        missing = [k for k in keys if k not in f]
        if missing:
            raise UrbanMTLError(
                f"'{self.path}' has no dataset(s) {', '.join(missing)} required by the {self.format} format "
                f"(it contains: {', '.join(sorted(f.keys())) or 'nothing'}). Give a {self.format} file or force "
                f"the right format with FORMAT:PATH (authors, so2sat, eurosat)."
            )

    def _check_images(self, f: h5py.File, key: str, bands: Optional[int]) -> tuple[int, int]:
        """(N, S) of the image dataset `key`; UrbanMTLError unless it is (N, S, S, bands), S a multiple of 8."""
        shape = f[key].shape
        if len(shape) != 4:
            raise UrbanMTLError(
                f"'{self.path}': {key} has shape {shape}, expected (N, height, width, bands) with the bands "
                f"last. Write the patches channels-last."
            )
        n, h, w, c = shape
        if bands is not None and c != bands:
            raise UrbanMTLError(
                f"'{self.path}': {key} has {c} bands, but the {self.format} format stores the {bands} "
                f"Sentinel-2 bands {', '.join(MODEL_BANDS)} in that order. Select those bands when writing "
                f"the file."
            )
        if h != w or h % PATCH_MULTIPLE:
            raise UrbanMTLError(
                f"'{self.path}': patches are {h} x {w} pixels, but they must be square with a side that is a "
                f"multiple of {PATCH_MULTIPLE}. Crop them (e.g. to {max(PATCH_MULTIPLE, min(h, w) // 8 * 8)} "
                f"px) when writing the file."
            )
        return n, h

    def _check_label(self, f: h5py.File, key: str, n: int, allowed: Sequence[tuple[int, ...]],
                     meaning: str) -> tuple[int, ...]:
        """Shape of label `key` if it is one of `allowed` (each after the leading N); else UrbanMTLError."""
        shape = tuple(f[key].shape)
        if len(shape) < 1 or shape[0] != n:
            raise UrbanMTLError(
                f"'{self.path}': {key} has {shape[0] if shape else 0} entries but {self.image_key} has {n} "
                f"patches. Every patch needs its {meaning}; rewrite the file with matching counts."
            )
        if shape[1:] not in [tuple(a) for a in allowed]:
            expected = " or ".join(str((n,) + tuple(a)) for a in allowed)
            raise UrbanMTLError(
                f"'{self.path}': {key} ({meaning}) has shape {shape}, expected {expected} to match "
                f"{self.image_key} {tuple(f[self.image_key].shape)}. Write labels on the patch grid."
            )
        return shape

    # --- Dataset interface ---

    def __len__(self) -> int:
        return int(self.indices.size)

    def num_eval_samples(self) -> int:
        return int(self.indices.size)

    def _plan(self, training: bool, rng: Optional[np.random.Generator]) -> list[int]:
        if training:
            if rng is None:
                raise ValueError("a training plan needs a random generator")
            return [int(i) for i in rng.permutation(self.indices)]
        return [int(i) for i in self.indices]

    def _handle(self) -> h5py.File:
        if self._file is None:
            self._file = open_h5(self.path)
        return self._file

    def _read(self, units: Sequence[int], training: bool, rng: Optional[np.random.Generator]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        indices = np.asarray(units, dtype=np.int64)
        image, hse, lcz = self._load(self._handle(), indices)
        nodata = _image_nodata(image)
        image = np.where(np.isfinite(image), image, np.float32(0)).astype(np.float32, copy=False)
        apply_image_nodata(image, hse, lcz, nodata)
        return image, hse, lcz

    def split(self, val_fraction: float, seed: int) -> tuple["PatchDataset", "PatchDataset"]:
        """(train, val) by patch: a seeded permutation of this dataset's patches, round(fraction x n) to val."""
        n_val = check_val_fraction(val_fraction, int(self.indices.size), "patches", f"'{self.path}'")
        order = np.random.default_rng(seed).permutation(self.indices)
        val = np.sort(order[:n_val])
        train = np.sort(order[n_val:])
        info = {"by": "patch", "val_fraction": float(val_fraction), "seed": int(seed)}
        return self._derive(train, "train", info), self._derive(val, "val", info)

    def _derive(self, indices: np.ndarray, subset: str, info: dict[str, Any]) -> "PatchDataset":
        part = copy.copy(self)
        part._lock = threading.Lock()
        part._file = None
        part.indices = np.asarray(indices, dtype=np.int64)
        part.subset = subset if self.subset is None else f"{self.subset}/{subset}"
        part.split_info = info
        return part

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "path": self.path,
            "patch_size": self.patch_size,
            "tasks": self.tasks(),
            "unit": "patch",
            "patches_in_file": self.num_in_file,
            "patches": int(self.indices.size),
            "samples_per_epoch": len(self),
            "bands": self.band_description(),
            "subset": self.subset,
            "split": self.split_info,
        }

    def band_description(self) -> dict[str, Any]:
        return {"model_bands": list(MODEL_BANDS), "layout": "MODEL", "scaling": "reflectance as stored"}


class AuthorsDataset(PatchDataset):
    """The authors' patch HDF5 (x, y_0 HSE percent, y_1 one-hot LCZ); see the module docstring."""

    format = "authors"

    def _inspect(self, f: h5py.File) -> None:
        self._require(f, "x")
        if "y_0" not in f and "y_1" not in f:
            raise UrbanMTLError(
                f"'{self.path}' has images (x) but neither y_0 (HSE) nor y_1 (LCZ) labels (it contains: "
                f"{', '.join(sorted(f.keys()))}). Add at least one label dataset."
            )
        n, s = self._check_images(f, "x", NUM_BANDS)
        self.num_in_file, self.patch_size = n, s
        self.has_hse = "y_0" in f
        self.has_lcz = "y_1" in f
        self._hse_full_res = False
        if self.has_hse:
            shape = self._check_label(
                f, "y_0", n, [(s // 2, s // 2, 1), (s // 2, s // 2), (s, s, 1), (s, s)], "HSE percent (y_0)")
            self._hse_full_res = shape[1] == s
        if self.has_lcz:
            self._check_label(f, "y_1", n, [(s, s, NUM_CLASSES)], "LCZ one-hot (y_1)")
        self._x_is_dn = np.issubdtype(f["x"].dtype, np.integer)

    def _load(self, f: h5py.File, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b, s = indices.size, self.patch_size
        image = _to_reflectance(read_rows(f["x"], indices))
        if self.has_hse:
            percent = read_rows(f["y_0"], indices).reshape(b, *f["y_0"].shape[1:3])
            hse = _fraction_or_nan(percent, 0.01, 100.0)
            if self._hse_full_res:
                hse = block_mean_2x2(hse)
            hse = hse[..., None]
        else:
            hse = np.full((b, s // 2, s // 2, 1), np.nan, dtype=np.float32)
        if self.has_lcz:
            lcz = renormalize_rows(read_rows(f["y_1"], indices))
        else:
            lcz = np.zeros((b, s, s, NUM_CLASSES), dtype=np.float32)
        return image, hse, lcz

    def band_description(self) -> dict[str, Any]:
        return {"model_bands": list(MODEL_BANDS), "layout": "MODEL",
                "scaling": "DN / 10000" if self._x_is_dn else "reflectance as stored"}


class So2SatDataset(PatchDataset):
    """So2Sat LCZ42 (sen2 reflectance, one LCZ label per patch); see the module docstring."""

    format = "so2sat"
    image_key = "sen2"

    def _inspect(self, f: h5py.File) -> None:
        self._require(f, "sen2", "label")
        n, s = self._check_images(f, "sen2", NUM_BANDS)
        self.num_in_file, self.patch_size = n, s
        self._check_label(f, "label", n, [(NUM_CLASSES,)], "one-hot LCZ label")
        self.has_hse, self.has_lcz = False, True
        self._x_is_dn = np.issubdtype(f["sen2"].dtype, np.integer)

    def _load(self, f: h5py.File, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b, s = indices.size, self.patch_size
        image = _to_reflectance(read_rows(f["sen2"], indices))
        hse = np.full((b, s // 2, s // 2, 1), np.nan, dtype=np.float32)
        label = renormalize_rows(read_rows(f["label"], indices))
        # The patch label describes the whole 320 m patch, so every pixel carries it.
        lcz = np.ascontiguousarray(np.broadcast_to(label[:, None, None, :], (b, s, s, NUM_CLASSES)))
        return image, hse, lcz

    def band_description(self) -> dict[str, Any]:
        return {"model_bands": list(MODEL_BANDS), "layout": "MODEL",
                "scaling": "DN / 10000" if self._x_is_dn else "reflectance as stored"}


class EuroSATDataset(PatchDataset):
    """The shared EuroSAT teacher file (13-band DN with B8A last, soft LCZ, HSE proxy, scene class)."""

    format = "eurosat"

    def _inspect(self, f: h5py.File) -> None:
        self._require(f, "x", "lcz_prob")
        n, s = self._check_images(f, "x", None)
        self.num_in_file, self.patch_size = n, s
        count = f["x"].shape[-1]
        names = f["x"].attrs.get("band_names", f.attrs.get("band_names"))
        if names is not None and len(names) == count:
            self._file_bands = [_decode(b) for b in names]
            self.band_indices = resolve_band_indices(count, bands=self._file_bands, source=f"'{self.path}' x")
            self._layout = "band_names attribute"
        else:
            # EuroSAT MS puts B8A after B12; the generic 13-band rule (L1C) would read the wrong bands.
            self.band_indices = resolve_band_indices(count, layout="EUROSAT", source=f"'{self.path}' x")
            self._file_bands = list(LAYOUTS["EUROSAT"])
            self._layout = "EUROSAT"
        self._check_label(f, "lcz_prob", n, [(s, s, NUM_CLASSES)], "LCZ probabilities (lcz_prob)")
        self.has_lcz = True
        self.has_hse = "hse" in f
        self._hse_full_res = False
        if self.has_hse:
            shape = self._check_label(
                f, "hse", n, [(s, s), (s, s, 1), (s // 2, s // 2), (s // 2, s // 2, 1)], "HSE (hse)")
            self._hse_full_res = shape[1] == s
            # uint8 holds HSE x 255; a float dataset holds the fraction itself.
            self._hse_scale = 1.0 / 255.0 if np.issubdtype(f["hse"].dtype, np.integer) else 1.0
        self._class_names: Optional[list[str]] = None
        self._classes: Optional[np.ndarray] = None
        if "eurosat_class" in f:
            self._check_label(f, "eurosat_class", n, [()], "EuroSAT class index (eurosat_class)")
            names = f["eurosat_class"].attrs.get("class_names", f.attrs.get("class_names"))
            self._classes = np.asarray(f["eurosat_class"][:], dtype=np.int64)
            if names is not None:
                self._class_names = [_decode(c) for c in names]

    def _load(self, f: h5py.File, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b, s = indices.size, self.patch_size
        raw = read_rows(f["x"], indices)
        image = _to_reflectance(raw[..., self.band_indices])
        if self.has_hse:
            values = read_rows(f["hse"], indices).reshape(b, *f["hse"].shape[1:3]).astype(np.float32)
            hse = values * np.float32(self._hse_scale)
            hse = np.where((hse >= 0) & (hse <= 1), hse, np.nan).astype(np.float32)
            if self._hse_full_res:
                hse = block_mean_2x2(hse)
            hse = hse[..., None]
        else:
            hse = np.full((b, s // 2, s // 2, 1), np.nan, dtype=np.float32)
        lcz = renormalize_rows(read_rows(f["lcz_prob"], indices))
        return image, hse, lcz

    def patch_labels(self) -> Optional[list[str]]:
        """EuroSAT class name of each patch, in evaluation order (this dataset's patches, ascending index)."""
        if self._classes is None:
            return None
        classes = self._classes[self.indices]
        if self._class_names is None:
            return [str(int(c)) for c in classes]
        return [self._class_names[int(c)] if 0 <= c < len(self._class_names) else str(int(c))
                for c in classes]

    def band_description(self) -> dict[str, Any]:
        return {"model_bands": list(MODEL_BANDS), "file_bands": self._file_bands,
                "band_indices": [int(i) for i in self.band_indices], "layout": self._layout,
                "scaling": "DN / 10000"}


#: Patch readers by format name.
PATCH_FORMATS: dict[str, type[PatchDataset]] = {
    "authors": AuthorsDataset,
    "so2sat": So2SatDataset,
    "eurosat": EuroSATDataset,
}
