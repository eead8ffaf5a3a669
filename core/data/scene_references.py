"""A scene manifest's references opened on the scene's image grid: overlap and content checked on first opening,
the HSE scale and the LCZ kind settled (and stored in the spec, so split parts skip the checks)."""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling

from ..common.errors import UrbanMTLError
from ..common.lcz import NUM_CLASSES
from .manifest import SceneSpec
from .reference_polygons import PolygonReference
from .reference_rasters import (
    Bounds,
    RasterReference,
    codes_prepare,
    hse_prepare,
    open_raster,
    probabilities_prepare,
)


class ImageGrid(NamedTuple):
    """The 10 m grid of a scene's image."""

    crs: Optional[CRS]
    transform: Affine
    height: int
    width: int
    bounds: Bounds  # (west, south, east, north), as rasterio's dataset bounds


def open_hse(spec: SceneSpec, grid: ImageGrid, check: bool) -> RasterReference:
    """The HSE reference, averaged onto 20 m windows. With `check`: it overlaps the image and holds some
    valid value there; spec.hse_scale is guessed when the manifest leaves it out."""
    ref = RasterReference(spec.hse, [spec.hse_band], Resampling.average, f"HSE reference of {spec.source}")
    nodata = list(spec.hse_nodata) + ([ref.nodata] if ref.nodata is not None else [])
    if check:
        sample = ref.sample(grid.crs, grid.bounds)
        if spec.hse_scale is None:
            spec.hse_scale = guess_hse_scale(ref, sample, nodata)
        ref.prepare = hse_prepare(spec.hse_scale, nodata)
        if not np.isfinite(ref.prepare(sample)).any():
            raise UrbanMTLError(
                f"The HSE reference '{spec.hse}' of {spec.source} is all nodata over the image (nodata "
                f"codes {sorted(set(nodata))}, valid range 0..1 after scale {spec.hse_scale:g}). Check "
                f"hse_scale / hse_nodata or give a reference with data over the scene."
            )
    ref.prepare = hse_prepare(spec.hse_scale, nodata)
    ref.attach(grid.crs, grid.transform, grid.height, grid.width)
    return ref


def guess_hse_scale(ref: RasterReference, sample: np.ndarray, nodata: Sequence[float]) -> float:
    """0.01 (percent) for integer rasters or float rasters with valid values above 1; else 1 (fraction)."""
    if np.issubdtype(ref.dtype, np.integer):
        return 0.01
    values = sample[np.isfinite(sample) & ~np.isin(sample, np.asarray(list(nodata), dtype=np.float64))]
    values = values[(values >= 0) & (values <= 100)]
    return 0.01 if values.size and float(values.max()) > 1.0 + 1e-6 else 1.0


def open_lcz(spec: SceneSpec, grid: ImageGrid, check: bool) -> RasterReference:
    """The LCZ raster reference: codes (nearest) or 17 probability bands (bilinear or nearest) on 10 m
    windows. Settles spec.lcz_kind from the band count when the manifest leaves it out; with `check`, the
    raster must hold some LCZ value over the image."""
    with open_raster(spec.lcz, f"LCZ reference of {spec.source}") as probe:
        count = probe.count
    if spec.lcz_kind is None:
        spec.lcz_kind = _lcz_kind(spec, count)
    if spec.lcz_kind == "codes":
        ref = RasterReference(spec.lcz, [spec.lcz_band], Resampling.nearest, f"LCZ reference of {spec.source}")
        ref.prepare = codes_prepare(ref.nodata)
    else:
        if count < NUM_CLASSES:
            raise UrbanMTLError(
                f"The LCZ probability raster '{spec.lcz}' of {spec.source} has {count} bands; "
                f"{NUM_CLASSES} are needed (band k = LCZ k). Give all {NUM_CLASSES} bands."
            )
        resampling = Resampling.bilinear if spec.lcz_resampling == "bilinear" else Resampling.nearest
        ref = RasterReference(spec.lcz, list(range(1, NUM_CLASSES + 1)), resampling,
                              f"LCZ reference of {spec.source}")
        ref.prepare = probabilities_prepare(spec.lcz_scale, ref.nodata)
    if check and not np.isfinite(ref.prepare(ref.sample(grid.crs, grid.bounds))).any():
        raise UrbanMTLError(
            f"The LCZ reference '{spec.lcz}' of {spec.source} has no LCZ value over the image "
            f"(all 0/nodata). Give a reference with LCZ codes 1..17 (or 101..107) over the scene."
        )
    ref.attach(grid.crs, grid.transform, grid.height, grid.width)
    return ref


def _lcz_kind(spec: SceneSpec, count: int) -> str:
    """codes for one band, probabilities for 17; anything else needs lcz_kind in the manifest."""
    if count == 1:
        return "codes"
    if count == NUM_CLASSES:
        return "probabilities"
    raise UrbanMTLError(
        f"The LCZ reference '{spec.lcz}' of {spec.source} has {count} bands: neither one band "
        f"of codes nor {NUM_CLASSES} probability bands. Set lcz_kind (codes with lcz_band, or "
        f"probabilities = bands 1..{NUM_CLASSES})."
    )


def open_polygons(spec: SceneSpec, grid: ImageGrid) -> PolygonReference:
    """The LCZ training-area polygons over the image, in its CRS."""
    return PolygonReference(spec.lcz_polygons, spec.lcz_attribute or "", spec.lcz_layer, grid.crs, grid.bounds)

