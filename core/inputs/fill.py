"""Filling invalid pixels so that they do not change the network's predictions for the valid pixels next to them.

A convolutional network sees every pixel's neighbourhood. Zeros in a nodata hole (a scene's black border, a
cloud mask, the gap between two tiles of a mosaic) are a dark, unnatural surface that drags the predictions of
the valid pixels around the hole. Here every invalid pixel takes the value of the valid pixel it mirrors: the
nearest valid pixel, reflected once more through it (symmetric padding, as ``numpy.pad(mode="symmetric")`` pads
a rectangle). A valid rectangle inside nodata is thus seen exactly as if it were padded by mirroring, which is
how the engine already treats the scene's outer edges. Where the mirrored pixel is itself invalid or outside
the array, the nearest valid pixel is used.

Training windows and inference tiles both go through `fill_invalid` (in `core.inputs.scene.Scene.read` and for patch
files in `core.data.base.apply_image_nodata`), so the network learns with the fill it meets when mapping.
"""

from __future__ import annotations

import numpy as np


def fill_invalid(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """In place and returned: invalid pixels of `image` (H, W, C) replaced by their mirrored valid neighbours.

    valid: (H, W) bool. With no valid pixel the image becomes 0; with no invalid pixel it is left unchanged.
    """
    if valid.all():
        return image
    if not valid.any():
        image[...] = 0
        return image
    from scipy.ndimage import distance_transform_edt

    # For every pixel, the indices of the nearest valid pixel (the pixel itself when valid).
    nearest = distance_transform_edt(~valid, return_distances=False, return_indices=True)
    h, w = valid.shape
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    near_r, near_c = nearest[0], nearest[1]
    # Reflect through the nearest valid pixel, per axis, as symmetric padding does: one step past the edge
    # reads the edge pixel, two steps read the pixel inside it, and so on.
    dr, dc = near_r - rows, near_c - cols
    mir_r = near_r + dr - np.sign(dr)
    mir_c = near_c + dc - np.sign(dc)
    inside = (mir_r >= 0) & (mir_r < h) & (mir_c >= 0) & (mir_c < w)
    mir_r = np.where(inside, mir_r, near_r)
    mir_c = np.where(inside, mir_c, near_c)
    usable = valid[mir_r, mir_c]
    src_r = np.where(usable, mir_r, near_r)
    src_c = np.where(usable, mir_c, near_c)
    holes = ~valid
    image[holes] = image[src_r[holes], src_c[holes]]
    return image
