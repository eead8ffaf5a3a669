"""Reading HDF5 patch files: opening one with a clear error, reading rows in any order quickly."""

from __future__ import annotations

from typing import Sequence

import h5py
import numpy as np

from ..common.errors import UrbanMTLError


def open_h5(path: str) -> h5py.File:
    """Open an HDF5 file read-only, or raise UrbanMTLError saying the file is not a readable HDF5 file."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise UrbanMTLError(
            f"Cannot read '{path}' as an HDF5 file ({exc}). Check that the file is complete and is one of "
            f"the supported patch files (authors, so2sat, eurosat)."
        ) from None


def read_rows(dataset: h5py.Dataset, indices: Sequence[int]) -> np.ndarray:
    """dataset[indices] along axis 0 for any order of distinct indices, reading runs of consecutive indices.

    h5py fancy indexing needs increasing indices and is slow on long lists; sorted runs read as slices
    are the fastest way through a chunked file, and the result is put back in the order asked for.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        return np.zeros((0,) + dataset.shape[1:], dtype=dataset.dtype)
    order = np.argsort(indices, kind="stable")
    ordered = indices[order]
    breaks = np.nonzero(np.diff(ordered) != 1)[0] + 1
    parts = [dataset[int(run[0]): int(run[-1]) + 1] for run in np.split(ordered, breaks)]
    data = np.concatenate(parts, axis=0)
    out = np.empty_like(data)
    out[order] = data
    return out
