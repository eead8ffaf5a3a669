"""Reference rasters (HSE, LCZ codes or probabilities) warped onto a scene's grid one window at a time.

A raster reference is warped window by window with GDAL's warper (`rasterio.warp.reproject`, the engine behind
WarpedVRT): for each destination window the covering source window (plus a margin for the resampling kernel) is
read, its no-reference pixels are turned into NaN, and it is reprojected onto the destination grid. Working on
NaN-masked arrays rather than through a WarpedVRT's single nodata value is what lets HRL's two nodata codes
(254 and 255), out-of-range percentages and all-zero probability rows drop out of averages and interpolations
instead of being averaged in. Windows aligned with the source grid skip the warper (a plain read, resampled in
numpy).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform, transform_bounds
from rasterio.windows import Window, from_bounds

from ..common.errors import UrbanMTLError
from ..inputs.grid import crs_label
from ..common.lcz import normalize_codes

#: Source pixels read beyond the window on every side, so kernels near the window edge see full support.
MARGIN_PX = 2
#: Spacing, in image pixels, of the lattice of points placed in a reference's CRS (see RasterReference.attach).
LATTICE_PX = 32
#: Largest side of the decimated read used to check a whole reference (all nodata? which scale?).
CHECK_SIDE_PX = 512

Prepare = Callable[[np.ndarray], np.ndarray]
Bounds = tuple[float, float, float, float]


def open_raster(path: str | Path, what: str) -> rasterio.io.DatasetReader:
    """rasterio.open(path) with an UrbanMTLError naming `what` when GDAL cannot read the file."""
    try:
        return rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise UrbanMTLError(
            f"Cannot open the {what} '{path}' as a raster ({exc}). Give a GeoTIFF, VRT or another raster "
            f"GDAL can read."
        ) from None


class RasterReference:
    """A reference raster warped onto destination windows: `bands` (1-based) -> float32 with NaN = none.

    `prepare` turns a raw source block (bands, h, w) into float32 of the same shape with NaN wherever the
    source has no reference; it may be set after construction (the HSE scale is chosen from a sample).
    """

    def __init__(self, path: str | Path, bands: Sequence[int], resampling: Resampling, what: str,
                 prepare: Optional[Prepare] = None) -> None:
        self.path = str(path)
        self.bands = [int(b) for b in bands]
        self.resampling = resampling
        self.what = what
        self.prepare = prepare
        self._src: Optional[rasterio.io.DatasetReader] = None
        self._grid: Optional[tuple[CRS, Affine, Affine, np.ndarray, np.ndarray]] = None
        src = self.dataset()
        bad = [b for b in self.bands if not 1 <= b <= src.count]
        if bad:
            raise UrbanMTLError(
                f"The {what} '{self.path}' has {src.count} band(s); band(s) {bad} do not exist. "
                f"Choose bands 1..{src.count}."
            )
        if src.crs is None:
            raise UrbanMTLError(
                f"The {what} '{self.path}' has no coordinate reference system, so it cannot be placed on the "
                f"image grid. Assign its CRS (e.g. gdal_edit.py -a_srs EPSG:3035 file.tif)."
            )

    def dataset(self) -> rasterio.io.DatasetReader:
        if self._src is None or self._src.closed:
            self._src = open_raster(self.path, self.what)
        return self._src

    def close(self) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.dataset().dtypes[self.bands[0] - 1])

    @property
    def nodata(self) -> Optional[float]:
        return self.dataset().nodatavals[self.bands[0] - 1]

    def _window_from_source_bounds(self, left: float, bottom: float, right: float, top: float,
                                   margin: int) -> Optional[Window]:
        """Pixel window of the source covering source-CRS bounds plus `margin` pixels, clipped to the raster;
        None if they do not intersect."""
        src = self.dataset()
        win = from_bounds(left, bottom, right, top, transform=src.transform)
        row0 = math.floor(min(win.row_off, win.row_off + win.height)) - margin
        col0 = math.floor(min(win.col_off, win.col_off + win.width)) - margin
        row1 = math.ceil(max(win.row_off, win.row_off + win.height)) + margin
        col1 = math.ceil(max(win.col_off, win.col_off + win.width)) + margin
        row0, col0 = max(row0, 0), max(col0, 0)
        row1, col1 = min(row1, src.height), min(col1, src.width)
        if row1 <= row0 or col1 <= col0:
            return None
        return Window(col0, row0, col1 - col0, row1 - row0)

    def _source_window(self, dst_crs: CRS, bounds: Bounds, margin: int) -> Optional[Window]:
        src = self.dataset()
        left, bottom, right, top = transform_bounds(dst_crs, src.crs, *bounds, densify_pts=21)
        return self._window_from_source_bounds(left, bottom, right, top, margin)

    def sample(self, dst_crs: CRS, bounds: Bounds) -> np.ndarray:
        """Raw source values over `bounds`, decimated (nearest) to at most 512 px a side: (bands, h, w).

        Raises UrbanMTLError when the raster does not overlap `bounds`.
        """
        win = self._source_window(dst_crs, bounds, 0)
        if win is None:
            src = self.dataset()
            raise UrbanMTLError(
                f"The {self.what} '{self.path}' ({crs_label(src.crs)}, bounds "
                f"{tuple(round(v, 3) for v in src.bounds)}) does not overlap the image (bounds "
                f"{tuple(round(v, 3) for v in bounds)} in {crs_label(dst_crs)}). Give a reference that "
                f"covers the scene."
            )
        h, w = int(win.height), int(win.width)
        factor = max(1.0, max(h, w) / CHECK_SIDE_PX)
        out_shape = (len(self.bands), max(1, int(h / factor)), max(1, int(w / factor)))
        return self.dataset().read(self.bands, window=win, out_shape=out_shape, resampling=Resampling.nearest)

    def attach(self, grid_crs: CRS, grid_transform: Affine, height: int, width: int) -> None:
        """Place the image grid (height x width pixels) in the source CRS once, for fast window lookups.

        Creating a coordinate transformation costs ~20 ms, far more than warping a window, so the points of
        a lattice every LATTICE_PX image pixels (one ring beyond the image) are transformed in one call;
        a window's source bounds are then the extent of the lattice points around it.
        """
        step = LATTICE_PX
        rows = np.arange(-1, math.ceil(height / step) + 2, dtype=np.float64) * step
        cols = np.arange(-1, math.ceil(width / step) + 2, dtype=np.float64) * step
        cc, rr = np.meshgrid(cols, rows)
        xs, ys = grid_transform * (cc.ravel(), rr.ravel())
        sx, sy = transform(grid_crs, self.dataset().crs, list(xs), list(ys))
        self._grid = (grid_crs, grid_transform, ~grid_transform,
                      np.asarray(sx, dtype=np.float64).reshape(cc.shape),
                      np.asarray(sy, dtype=np.float64).reshape(cc.shape))

    def _lattice_window(self, dst_transform: Affine, height: int, width: int, margin: int
                        ) -> Optional[Window]:
        """Source window of a destination window on (a multiple of) the attached image grid."""
        _, _, to_pixel, sx, sy = self._grid
        corners = [dst_transform * (x, y) for x in (0, width) for y in (0, height)]
        pix = [to_pixel * xy for xy in corners]
        c0, c1 = min(p[0] for p in pix), max(p[0] for p in pix)
        r0, r1 = min(p[1] for p in pix), max(p[1] for p in pix)
        step = LATTICE_PX
        i0 = min(max(math.floor(r0 / step) + 1, 0), sx.shape[0] - 1)
        i1 = min(max(math.ceil(r1 / step) + 1, 0), sx.shape[0] - 1)
        j0 = min(max(math.floor(c0 / step) + 1, 0), sx.shape[1] - 1)
        j1 = min(max(math.ceil(c1 / step) + 1, 0), sx.shape[1] - 1)
        px, py = sx[i0:i1 + 1, j0:j1 + 1], sy[i0:i1 + 1, j0:j1 + 1]
        finite = np.isfinite(px) & np.isfinite(py)
        if not finite.any():
            return None
        return self._window_from_source_bounds(float(px[finite].min()), float(py[finite].min()),
                                               float(px[finite].max()), float(py[finite].max()), margin)

    def warp(self, dst_transform: Affine, height: int, width: int) -> np.ndarray:
        """The reference on a destination window of the attached grid's CRS (any pixel size aligned with
        it): (bands, height, width) float32, NaN = no reference."""
        if self.prepare is None or self._grid is None:
            raise RuntimeError("RasterReference.prepare and attach() must be set before warping")
        factor = self._aligned_factor(dst_transform)
        if factor is not None:
            return self._upsample(dst_transform, height, width, factor)
        out = np.full((len(self.bands), height, width), np.nan, dtype=np.float32)
        win = self._lattice_window(dst_transform, height, width, MARGIN_PX)
        if win is None:
            return out
        src = self.dataset()
        data = self.prepare(src.read(self.bands, window=win)).astype(np.float32, copy=False)
        if not np.isfinite(data).any():
            return out
        reproject(
            source=data, destination=out,
            src_transform=src.window_transform(win), src_crs=src.crs, src_nodata=np.nan,
            dst_transform=dst_transform, dst_crs=self._grid[0], dst_nodata=np.nan,
            resampling=self.resampling,
        )
        return out

    def _aligned_factor(self, dst_transform: Affine) -> Optional[int]:
        """k when the destination grid is the source grid (same CRS, no rotation, pixel edges on source pixel
        edges) with pixels k = 1, 2, ... times smaller, else None. Such windows (the shared references are on
        the image's 20 m grid) skip GDAL's warper: a plain read, resampled in numpy, is several times faster."""
        src = self.dataset()
        st = src.transform
        if self.resampling not in (Resampling.nearest, Resampling.bilinear, Resampling.average):
            return None
        if st.b or st.d or dst_transform.b or dst_transform.d or src.crs != self._grid[0]:
            return None
        ratio = st.a / dst_transform.a
        k = round(ratio)
        if k < 1 or abs(ratio - k) > 1e-9 or abs(st.e / dst_transform.e - k) > 1e-9:
            return None
        if k > 1 and self.resampling == Resampling.average:
            return None
        off_c, off_r = (dst_transform.c - st.c) / st.a, (dst_transform.f - st.f) / st.e
        if abs(off_c - round(off_c)) > 1e-6 or abs(off_r - round(off_r)) > 1e-6:
            return None
        return k

    def _upsample(self, dst_transform: Affine, height: int, width: int, k: int) -> np.ndarray:
        """The aligned case of `warp`: nearest repeats each source pixel k x k times, bilinear interpolates
        between source pixel centres (weights renormalised over valid neighbours, edges held)."""
        src = self.dataset()
        st = src.transform
        r0, c0 = round((dst_transform.f - st.f) / st.e), round((dst_transform.c - st.c) / st.a)
        h_src, w_src = -(-height // k), -(-width // k)
        margin = 1 if self.resampling == Resampling.bilinear and k > 1 else 0
        win = Window(c0 - margin, r0 - margin, w_src + 2 * margin, h_src + 2 * margin)
        data = np.full((len(self.bands), int(win.height), int(win.width)), np.nan, dtype=np.float32)
        rr0, cc0 = max(int(win.row_off), 0), max(int(win.col_off), 0)
        rr1 = min(int(win.row_off + win.height), src.height)
        cc1 = min(int(win.col_off + win.width), src.width)
        if rr1 > rr0 and cc1 > cc0:
            raw = src.read(self.bands, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
            data[:, rr0 - int(win.row_off): rr1 - int(win.row_off), cc0 - int(win.col_off): cc1 - int(win.col_off)] \
                = self.prepare(raw)
        if k == 1:
            return np.ascontiguousarray(data[:, :height, :width])
        if self.resampling != Resampling.bilinear:
            up = np.repeat(np.repeat(data, k, axis=1), k, axis=2)
            return np.ascontiguousarray(up[:, :height, :width])
        return _bilinear(data, height, width, k, margin)


def _bilinear(data: np.ndarray, height: int, width: int, k: int, margin: int) -> np.ndarray:
    """`data` (bands, h, w; NaN = none) upsampled k times by bilinear interpolation between source pixel
    centres, weights renormalised over valid neighbours, edges held; `margin` source pixels surround the
    destination window's source pixels."""
    # Destination pixel centre y (0-based) sits at source coordinate (y + 0.5) / k - 0.5, + margin.
    def axis(n: int) -> tuple[np.ndarray, np.ndarray]:
        u = (np.arange(n) + 0.5) / k - 0.5 + margin
        i0 = np.floor(u).astype(np.intp)
        return i0, (u - i0).astype(np.float32)

    ri, rf = axis(height)
    ci, cf = axis(width)
    valid = np.isfinite(data)
    values = np.where(valid, data, np.float32(0))
    num = np.zeros((data.shape[0], height, width), np.float32)
    den = np.zeros((data.shape[0], height, width), np.float32)
    for dr, wr in ((0, 1 - rf), (1, rf)):
        for dc, wc in ((0, 1 - cf), (1, cf)):
            w = wr[:, None] * wc[None, :]
            rows = np.clip(ri + dr, 0, data.shape[1] - 1)[:, None]
            cols = np.clip(ci + dc, 0, data.shape[2] - 1)[None, :]
            ok = valid[:, rows, cols]
            num += np.where(ok, values[:, rows, cols] * w, 0)
            den += np.where(ok, w, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 1e-6, num / den, np.nan).astype(np.float32)
    return out


# --- what counts as a reference value ---


def hse_prepare(scale: float, nodata: Sequence[float]) -> Prepare:
    """Raw HSE -> fraction 0..1 (value x scale), NaN for nodata codes, non-finite or out-of-range values."""
    codes = np.asarray(list(nodata), dtype=np.float64)

    def prepare(raw: np.ndarray) -> np.ndarray:
        values = raw.astype(np.float32)
        invalid = ~np.isfinite(values)
        if codes.size:
            invalid |= np.isin(raw, codes)
        fraction = values * np.float32(scale)
        # A small tolerance keeps 100 % (or 254/254) valid despite float rounding of the scale.
        invalid |= (fraction < -1e-6) | (fraction > 1 + 1e-5)
        return np.where(invalid, np.nan, np.clip(fraction, 0.0, 1.0)).astype(np.float32)

    return prepare


def codes_prepare(nodata: Optional[float]) -> Prepare:
    """Raw LCZ codes -> float codes 1..17 (101..107 mapped to 11..17), NaN for 0/nodata/anything else."""

    def prepare(raw: np.ndarray) -> np.ndarray:
        values = np.asarray(raw)
        if np.issubdtype(values.dtype, np.floating):
            values = np.where(np.isfinite(values), values, 0)
            # Non-integral values are not codes; round-tripping through int would make them look like one.
            values = np.where(values == np.round(values), values, 0).astype(np.int64)
        codes = normalize_codes(values).astype(np.float32)
        if nodata is not None and np.isfinite(nodata):
            codes[np.asarray(raw) == nodata] = 0
        return np.where(codes > 0, codes, np.nan).astype(np.float32)

    return prepare


def probabilities_prepare(scale: float, nodata: Optional[float]) -> Prepare:
    """Raw 17-band probabilities -> values x scale; pixels with no reference (all bands 0 or all equal to
    nodata, any band negative or non-finite) -> NaN in every band, so interpolation never mixes them in."""

    def prepare(raw: np.ndarray) -> np.ndarray:
        values = raw.astype(np.float32) * np.float32(scale)
        invalid = ~np.all(np.isfinite(values), axis=0) | np.any(values < 0, axis=0)
        invalid |= ~np.any(values > 0, axis=0)
        if nodata is not None and np.isfinite(nodata):
            invalid |= np.all(raw == nodata, axis=0)
        values[:, invalid] = np.nan
        return values

    return prepare
