"""The 10 m grid of a scene: georeferencing checks, warping on the fly to the local UTM zone, the extent's window."""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Optional, Sequence

from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import aligned_target, calculate_default_transform, transform as transform_points
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from ..common.errors import UrbanMTLError

#: Pixel size the network was trained on, in metres.
TARGET_RES_M = 10.0
#: Pixels within this many metres of 10 m are read as they are (EuroSAT files have 9.99 m pixels).
RES_TOLERANCE_M = 0.05


def check_georeferenced(ds, name: str) -> None:
    if ds.crs is None:
        raise UrbanMTLError(
            f"The input {name} has no coordinate reference system. Assign the right one (e.g. "
            f"'gdal_edit.py -a_srs EPSG:32633 file.tif', or in QGIS: Layer > Set CRS) and run again."
        )
    if ds.transform.is_identity:
        raise UrbanMTLError(
            f"The input {name} has no georeferencing (no geotransform). Georeference it first (gdalwarp or "
            f"the QGIS Georeferencer)."
        )


def _is_metric(crs: CRS) -> bool:
    units = (crs.linear_units or "").lower()
    return units in ("metre", "meter", "m", "metres", "meters")


def needs_warp(ds) -> bool:
    t = ds.transform
    if ds.crs.is_geographic or not _is_metric(ds.crs) or t.b or t.d:
        return True
    return abs(abs(t.a) - TARGET_RES_M) > RES_TOLERANCE_M or abs(abs(t.e) - TARGET_RES_M) > RES_TOLERANCE_M


def utm_crs_for(lon: float, lat: float) -> CRS:
    """WGS 84 / UTM zone of a longitude/latitude (EPSG 326zz north, 327zz south)."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def warp_to_utm(ds, name: str, stack: ExitStack):
    left, bottom, right, top = ds.bounds
    xs, ys = transform_points(ds.crs, "EPSG:4326", [(left + right) / 2], [(bottom + top) / 2])
    utm = utm_crs_for(xs[0], ys[0])
    transform, width, height = calculate_default_transform(
        ds.crs, utm, ds.width, ds.height, *ds.bounds, resolution=TARGET_RES_M)
    # Snap to whole 10 m coordinates, as Sentinel-2 tiles are, so 20 m and 100 m cells fall on round numbers.
    transform, width, height = aligned_target(transform, width, height, TARGET_RES_M)
    nodata = ds.nodata if ds.nodata is not None else 0
    vrt = stack.enter_context(WarpedVRT(ds, crs=utm, transform=transform, width=width, height=height,
                                        resampling=Resampling.bilinear, src_nodata=ds.nodata, nodata=nodata))
    res = ds.res
    what = "degrees" if ds.crs.is_geographic else (ds.crs.linear_units or "units")
    note = (f"{name}: pixels are {res[0]:.6g} x {res[1]:.6g} {what} in {crs_label(ds.crs)}; warping on the "
            f"fly to 10 m in {crs_label(utm)} (bilinear). The outputs are on that grid.")
    return vrt, note


def crs_label(crs: Optional[CRS]) -> str:
    """A short name of `crs` for messages: EPSG:code when it has one."""
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_string()[:80] or "an unnamed CRS")


def scene_window(ds, extent: Optional[Sequence[float]], extent_crs: Optional[str], original_crs: CRS,
                  name: str, messages: list[str]) -> Window:
    full = Window(0, 0, ds.width, ds.height)
    if extent is None:
        return full
    if len(extent) != 4:
        raise UrbanMTLError(f"The extent must be 4 numbers xmin ymin xmax ymax; got {list(extent)}.")
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    if not (xmin < xmax and ymin < ymax):
        raise UrbanMTLError(
            f"The extent ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) is empty or inverted. Give xmin ymin xmax ymax "
            f"with xmin < xmax and ymin < ymax."
        )
    try:
        src_crs = CRS.from_user_input(extent_crs) if extent_crs else original_crs
    except Exception:
        raise UrbanMTLError(f"The extent CRS '{extent_crs}' is not a CRS GDAL knows. Use e.g. 'EPSG:4326'.") from None
    try:
        bounds = transform_bounds(src_crs, ds.crs, xmin, ymin, xmax, ymax, densify_pts=21)
    except Exception as exc:
        raise UrbanMTLError(f"The extent cannot be transformed to the raster's CRS: {exc}.") from None
    win = from_bounds(*bounds, transform=ds.transform)
    eps = 1e-6
    r0, c0 = math.floor(win.row_off + eps), math.floor(win.col_off + eps)
    r1, c1 = math.ceil(win.row_off + win.height - eps), math.ceil(win.col_off + win.width - eps)
    cr0, cc0, cr1, cc1 = max(r0, 0), max(c0, 0), min(r1, ds.height), min(c1, ds.width)
    if cr1 <= cr0 or cc1 <= cc0:
        b = ds.bounds
        raise UrbanMTLError(
            f"The extent ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) in {crs_label(src_crs)} lies outside the "
            f"input {name}, which covers {b.left:.0f}..{b.right:.0f} x {b.bottom:.0f}..{b.top:.0f} in "
            f"{crs_label(ds.crs)}. Choose an extent that overlaps the raster, or leave it out."
        )
    if (cr0, cc0, cr1, cc1) != (r0, c0, r1, c1):
        messages.append(f"The extent reaches beyond {name}; it was clipped to the raster.")
    return Window(cc0, cr0, cc1 - cc0, cr1 - cr0)
