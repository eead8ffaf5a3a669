"""Opening a Sentinel-2 input as one 10-band scene on a 10 m grid, and reading it window by window (Scene.read).

Inputs: any raster GDAL reads (GeoTIFF, VRT, ...) with the bands named in the file or laid out as a known stack
(core.common.bands, core.inputs.rasters); a Sentinel-2 SAFE folder, its .zip or its MTD_MSI*.xml, or single-band files of
one granule (a folder, a glob pattern or several paths, band names taken from the file names), both stacked by
core.inputs.products. Rasters whose pixels are not 10 m, or whose CRS is geographic, are warped on the fly to
10 m in their local UTM zone (core.inputs.grid). DN offsets come from core.inputs.metadata, the input's files from
core.inputs.files. Nothing is ever read whole: `Scene.read` reads one window.
"""

from __future__ import annotations

import glob
import math
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..common.bands import MODEL_BANDS, PRODUCT_XML_RE
from ..common.errors import UrbanMTLError
from .fill import fill_invalid
from .checks import ValueScale, assess_value_scale, check_offset, check_offsets
from .errors import READ_ERRORS, damaged_input_error
from .files import is_vrt_file, real_paths, vrt_sources
from .gdal_names import sentinel2_product
from .grid import check_georeferenced, needs_warp, scene_window, warp_to_utm
from .metadata import resolve_offsets
from .opened import OpenedInput
from .rasters import map_raster_bands, rasterio_open
from .products import band_files_in, find_product_xml, open_band_files, open_sentinel2

#: Largest decimated read used to look at a whole scene cheaply (pixels per side).
SAMPLE_SIZE = 512

InputSpec = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]


#: Pixels of context read around a window that has nodata holes, to fill them from their nearest valid pixels.
FILL_CONTEXT_PX = 64


@dataclass
class Scene:
    """A 10-band, 10 m view of the input, restricted to the scene window (the extent, or the whole raster).

    Coordinates given to `read` are 10 m pixels relative to the window's upper-left pixel. Reflectance is
    (DN + offset) / 10000 per band (or the values as they are when the file already holds reflectance).
    """

    dataset: Any                       # rasterio DatasetReader or WarpedVRT on the 10 m grid
    indexes: list[int]                 # 1-based band numbers of MODEL_BANDS in `dataset`, model order
    offsets: np.ndarray                # (10,) float32 DN offsets, model order
    scale: float                       # divide (DN + offset) by this: 10000, or 1 for reflectance files
    nodata: list[Optional[float]]      # nodata value of each selected band (None: no nodata value)
    window: Window                     # integer window of the scene in `dataset` pixels
    name: str                          # how messages name the input
    warped: bool = False
    messages: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)       # every file the input reads (real paths, sorted)
    value_scale: Optional[ValueScale] = None             # what the values are (core.inputs.checks)
    _sample_dn: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    @property
    def height(self) -> int:
        return int(self.window.height)

    @property
    def width(self) -> int:
        return int(self.window.width)

    @property
    def crs(self) -> CRS:
        return self.dataset.crs

    @property
    def transform(self):
        """Affine transform of the scene's 10 m grid (upper-left corner of the window)."""
        return self.dataset.window_transform(self.window)

    @property
    def pixel_area_m2(self) -> float:
        t = self.transform
        return abs(t.a * t.e - t.b * t.d)

    def read(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Reflectance (height, width, 10) float32 and validity (height, width) bool of a window of the scene.

        The window may reach outside the scene: inside the raster the real pixels are read (context for the
        network); beyond the raster's edges the data are mirrored (symmetric padding) and marked invalid.
        Invalid pixels inside the raster (any band nodata or NaN, or all bands 0) are filled from the valid
        pixels around them (`core.inputs.fill.fill_invalid`), so that holes do not change their neighbours' maps.
        This is the one reader of Sentinel-2 pixels: inference tiles and training windows both come from it.
        """
        r0, c0 = int(self.window.row_off) + row, int(self.window.col_off) + col
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + height, self.dataset.height), min(c0 + width, self.dataset.width)
        if rr1 <= rr0 or cc1 <= cc0:
            # Wholly outside the raster (cannot happen for tiles that touch the scene); nothing to mirror.
            return (np.zeros((height, width, len(MODEL_BANDS)), np.float32), np.zeros((height, width), bool))
        dn = self.dataset.read(self.indexes, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
        refl, valid = self._to_reflectance(dn)
        if not valid.all():
            refl = self._filled(refl, valid, rr0, cc0, rr1, cc1)
        pads = ((rr0 - r0, r0 + height - rr1), (cc0 - c0, c0 + width - cc1))
        if any(p for pair in pads for p in pair):
            refl = np.pad(refl, pads + ((0, 0),), mode="symmetric")
            valid = np.pad(valid, pads, mode="constant", constant_values=False)
        return refl, valid

    def _filled(self, refl: np.ndarray, valid: np.ndarray, rr0: int, cc0: int, rr1: int, cc1: int) -> np.ndarray:
        """`refl` (raster rows rr0:rr1, columns cc0:cc1) with its invalid pixels filled. The fill looks
        FILL_CONTEXT_PX beyond the window (where the raster goes on), so that a hole is filled from the valid
        pixels nearest to it in the raster, not only from those that happen to lie inside this window."""
        m = FILL_CONTEXT_PX
        er0, ec0 = max(rr0 - m, 0), max(cc0 - m, 0)
        er1, ec1 = min(rr1 + m, self.dataset.height), min(cc1 + m, self.dataset.width)
        if (er0, ec0, er1, ec1) == (rr0, cc0, rr1, cc1):
            return fill_invalid(refl, valid)
        big, big_valid = self._to_reflectance(
            self.dataset.read(self.indexes, window=Window(ec0, er0, ec1 - ec0, er1 - er0)))
        fill_invalid(big, big_valid)
        return np.ascontiguousarray(big[rr0 - er0: rr1 - er0, cc0 - ec0: cc1 - ec0])

    def _to_reflectance(self, dn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(10, h, w) raw values -> ((h, w, 10) float32 reflectance with invalid pixels zeroed, (h, w) valid)."""
        valid = ~np.all(dn == 0, axis=0)
        for k, nodata in enumerate(self.nodata):
            if nodata is not None and not math.isnan(nodata):
                valid &= dn[k] != nodata
        if np.issubdtype(dn.dtype, np.floating):
            valid &= np.all(np.isfinite(dn), axis=0)
        refl = np.moveaxis(dn, 0, -1).astype(np.float32, order="C")    # pixel-interleaved: a batch is a view
        refl += self.offsets
        refl /= np.float32(self.scale)
        refl[~valid] = 0.0
        return refl, valid

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A decimated look at the whole scene (at most SAMPLE_SIZE pixels a side, nearest neighbour):
        raw values (10, h, w) and validity (h, w). Read once; InputError when the input is damaged."""
        if self._sample_dn is None:
            h, w = min(self.height, SAMPLE_SIZE), min(self.width, SAMPLE_SIZE)
            try:
                self._sample_dn = self.dataset.read(self.indexes, window=self.window,
                                                    out_shape=(len(self.indexes), h, w),
                                                    resampling=Resampling.nearest)
            except READ_ERRORS as exc:
                raise damaged_input_error(self.name, exc) from None
        dn = self._sample_dn
        _, valid = self._to_reflectance(dn)
        return dn, valid

    def has_valid_pixels(self) -> bool:
        """True when at least one pixel of the scene is valid. Looks at a decimated sample first and reads the
        scene strip by strip only when the sample has no valid pixel (an all-nodata or nearly empty scene)."""
        _, valid = self.sample()
        if valid.any():
            return True
        rows = max(1, 4_000_000 // max(1, self.width * len(self.indexes)))
        for r in range(0, self.height, rows):
            try:
                _, valid = self.read(r, 0, min(rows, self.height - r), self.width)
            except READ_ERRORS as exc:
                raise damaged_input_error(self.name, exc) from None
            if valid.any():
                return True
        return False


@contextmanager
def open_scene(source: InputSpec, *, bands: Optional[Sequence[str]] = None,
               extent: Optional[Sequence[float]] = None, extent_crs: Optional[str] = None,
               offset: Optional[float] = None) -> Iterator[Scene]:
    """Open an input (see the module docstring) as a Scene; closes everything it opened on exit.

    bands: the Sentinel-2 name of every band of a single raster, in file order (overrides its descriptions).
    extent: (xmin, ymin, xmax, ymax) in extent_crs (None: the input's own CRS); the scene is the window of
    whole 10 m pixels that covers it, clipped to the raster. offset: DN offset to apply instead of the one
    the metadata implies (e.g. -1000 for a processing-baseline-04.00 product without metadata).
    Raises UrbanMTLError for every problem with the input (InputError when it is damaged or its values are not
    Sentinel-2 DN or reflectance). scene.files lists every file the input reads, scene.value_scale what its
    values are (core.inputs.checks).
    """
    offset = check_offset(offset)
    with ExitStack() as stack:
        opened = _open_input(source, bands, stack)
        messages = list(opened.messages)
        ds = opened.dataset
        check_georeferenced(ds, opened.name)
        original_crs = ds.crs
        warped = False
        if needs_warp(ds):
            ds, note = warp_to_utm(ds, opened.name, stack)
            warped = True
            messages.append(note)
        window = scene_window(ds, extent, extent_crs, original_crs, opened.name, messages)
        offsets, scale = resolve_offsets(opened, offset, messages)
        if offset is None:
            offsets = check_offsets(offsets, opened.name)
        nodata = [ds.nodatavals[i - 1] for i in opened.indexes]
        scene = Scene(dataset=ds, indexes=opened.indexes, offsets=offsets, scale=scale, nodata=nodata,
                      window=window, name=opened.name, warped=warped, messages=messages,
                      files=real_paths(opened.files))
        _check_scale(scene, offset)
        yield scene


# --- recognising and opening the input ---


def _open_input(source: InputSpec, bands: Optional[Sequence[str]], stack: ExitStack) -> OpenedInput:
    """Recognise what `source` is (several band files, a folder of them, a SAFE product, a product named the QGIS
    way, core.inputs.gdal_names; one raster) and open it."""
    product = sentinel2_product(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else None
    if product is not None:
        return open_sentinel2(product, os.fspath(source), bands, stack)
    paths = _expand(source)
    if len(paths) > 1:
        return open_band_files(paths, bands, stack, name=f"the {len(paths)} band files")
    path = paths[0]
    if path.is_dir():
        product_xml = find_product_xml(path)
        if product_xml is not None:
            return open_sentinel2(str(product_xml), path.name, bands, stack)
        files = band_files_in(path)
        if files:
            return open_band_files(files, bands, stack, name=f"folder '{path}'")
        raise UrbanMTLError(
            f"The folder '{path}' is neither a Sentinel-2 SAFE product (no MTD_MSIL1C.xml or MTD_MSIL2A.xml) "
            f"nor a folder of single-band files named by band (e.g. T33UUU_20170216T102101_B02.jp2). Pass a "
            f"raster file, a SAFE folder or .zip, or the folder that holds the band files."
        )
    if path.suffix.lower() == ".zip" or PRODUCT_XML_RE.match(path.name):
        return open_sentinel2(str(path), path.name, bands, stack)
    sources = vrt_sources(path, f"'{path.name}'") if is_vrt_file(path) else []
    ds = rasterio_open(str(path), path.name, stack)
    if ds.count == 0 and ds.subdatasets:
        if ds.driver == "SENTINEL2":
            return open_sentinel2(str(path), path.name, bands, stack)
        raise UrbanMTLError(
            f"'{path.name}' is a container of {len(ds.subdatasets)} subdatasets, not one raster. Pass one of "
            f"them, e.g. {ds.subdatasets[0]}."
        )
    return map_raster_bands(ds, path, sources, bands)


def _expand(source: InputSpec) -> list[Path]:
    """The paths an input names: one path, several, or a glob pattern. Raises when something is missing."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise UrbanMTLError("No input raster was given. Pass a Sentinel-2 GeoTIFF, VRT, SAFE folder or .zip.")
    paths: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if any(ch in text for ch in "*?[") and not os.path.exists(text):
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise UrbanMTLError(f"No file matches the input pattern '{text}'. Check the folder and pattern.")
            paths += [Path(m) for m in matches]
            continue
        path = Path(text).expanduser()
        if not path.exists():
            raise UrbanMTLError(f"The input '{text}' does not exist. Check the path.")
        paths.append(path)
    return paths


def _check_scale(scene: Scene, explicit_offset: Optional[float]) -> None:
    """Decide from the data type and a sample of the values what they are (core.inputs.checks: DN, reflectance,
    reflectance in percent, or refused as 8-bit display values) and set the scene's scale and offsets."""
    dtypes = [scene.dataset.dtypes[i - 1] for i in scene.indexes]
    dn, valid = scene.sample()
    verdict = assess_value_scale(dtypes, dn, valid, name=scene.name, explicit_offset=explicit_offset)
    scene.value_scale = verdict
    if not verdict.use_offset:
        scene.offsets = np.zeros(len(MODEL_BANDS), dtype=np.float32)
    scene.scale = verdict.divisor
    if verdict.message:
        scene.messages.append(verdict.message)
