"""Opening Sentinel-2 inputs as one 10-band scene on a 10 m grid: band mapping, DN offset, nodata, warping to UTM.

Inputs: any raster GDAL reads (GeoTIFF, VRT, ...) with the bands named in the file or laid out as a known stack
(core.bands); a Sentinel-2 SAFE folder, its .zip or its MTD_MSI*.xml (GDAL's SENTINEL2 driver: the 10 m and 20 m
subdatasets are stacked); single-band files of one granule (a folder, a glob pattern or several paths, band
names taken from the file names). Rasters whose pixels are not 10 m, or whose CRS is geographic, are warped on
the fly to 10 m in their local UTM zone. Nothing is ever read whole: `Scene.read` reads one window.
"""

from __future__ import annotations

import glob
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
import zipfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import MemoryFile
from rasterio.vrt import WarpedVRT
from rasterio.warp import aligned_target, calculate_default_transform, transform as transform_points
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from .bands import (
    LAYOUTS, MODEL_BANDS, QUANTIFICATION_VALUE, layout_of_13_bands, normalize_band_name, offset_for_baseline,
    resolve_band_indices,
)
from .errors import InputError, UrbanMTLError
from .input_checks import REFLECTANCE_MEDIAN_LIMIT  # noqa: F401 - kept importable from here
from .input_checks import ValueScale, assess_value_scale, check_offset, check_offsets
from .fill import fill_invalid

#: Pixel size the network was trained on, in metres.
TARGET_RES_M = 10.0
#: Pixels within this many metres of 10 m are read as they are (EuroSAT files have 9.99 m pixels).
RES_TOLERANCE_M = 0.05
# How values become reflectance (REFLECTANCE_MEDIAN_LIMIT and the rest) is decided in core.input_checks.
#: Largest decimated read used to look at a whole scene cheaply (pixels per side).
SAMPLE_SIZE = 512

InputSpec = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]

_BAND_FILE_RE = re.compile(r"(?:^|[_\-.])(B(?:0?[1-9]|1[0-2]|0?8A))(?:_\d+m)?\.(?:jp2|tiff?)$", re.IGNORECASE)
_PRODUCT_XML_RE = re.compile(r"^(MTD_MSIL(?:1C|2A)|S2[A-Z]_[A-Z]{4}_MTD_SAF.*)\.xml$", re.IGNORECASE)
_BASELINE_IN_NAME_RE = re.compile(r"_N(\d{2})(\d{2})_")
_OFFSET_KEYS = ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET")
try:  # GDAL errors rasterio raises as they are (not wrapped in RasterioIOError)
    from rasterio._err import CPLE_BaseError as _CPLE_BaseError
except ImportError:  # pragma: no cover - other rasterio versions
    _CPLE_BaseError = RasterioIOError
#: Exceptions a read of a damaged or incomplete input raises.
READ_ERRORS: tuple[type[BaseException], ...] = (RasterioIOError, _CPLE_BaseError)


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
    value_scale: Optional[ValueScale] = None             # what the values are (core.input_checks)
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
        pixels around them (`core.fill.fill_invalid`), so that holes do not change their neighbours' maps.
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
        refl = np.moveaxis(dn, 0, -1).astype(np.float32)
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


def damaged_input_error(name: str, exc: BaseException) -> InputError:
    """The error for a read that failed inside an input that opened: a truncated or corrupt file, a VRT source
    gone missing. Names the input and GDAL's reason."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for prefix in ("Read or write failed. ", "Read failed. "):
        if reason.startswith(prefix):
            reason = reason[len(prefix):]
    return InputError(
        f"The input is damaged or incomplete: {name}, {reason[:300].rstrip('.')}. Copy or download it again (an "
        f"interrupted download or a full disk leaves a truncated file), or check it with 'gdalinfo -checksum'."
    )


@dataclass
class _Opened:
    """An input opened on its own grid, before warping and windowing."""

    dataset: Any
    indexes: list[int]
    name: str
    offsets: Optional[np.ndarray] = None       # per model band, when the metadata gives them
    offset_source: str = ""
    baseline: Optional[str] = None
    baseline_source: str = ""
    messages: list[str] = field(default_factory=list)
    fixed_band_order: bool = False             # True when we built the stack ourselves (bands option unused)
    files: list[str] = field(default_factory=list)   # every file the input reads


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
    values are (core.input_checks).
    """
    offset = check_offset(offset)
    with ExitStack() as stack:
        opened = _open_input(source, bands, stack)
        messages = list(opened.messages)
        ds = opened.dataset
        _check_georeferenced(ds, opened.name)
        original_crs = ds.crs
        warped = False
        if _needs_warp(ds):
            ds, note = _warp_to_utm(ds, opened.name, stack)
            warped = True
            messages.append(note)
        window = _scene_window(ds, extent, extent_crs, original_crs, opened.name, messages)
        offsets, scale = _resolve_offsets(opened, offset, messages)
        if offset is None:
            offsets = check_offsets(offsets, opened.name)
        nodata = [ds.nodatavals[i - 1] for i in opened.indexes]
        scene = Scene(dataset=ds, indexes=opened.indexes, offsets=offsets, scale=scale, nodata=nodata,
                      window=window, name=opened.name, warped=warped, messages=messages,
                      files=_real_paths(opened.files))
        _check_scale(scene, offset)
        yield scene


# --- recognising and opening the input ---


def _open_input(source: InputSpec, bands: Optional[Sequence[str]], stack: ExitStack) -> _Opened:
    paths = _expand(source)
    if len(paths) > 1:
        return _open_band_files(paths, bands, stack, name=f"the {len(paths)} band files")
    path = paths[0]
    if path.is_dir():
        product_xml = _find_product_xml(path)
        if product_xml is not None:
            return _open_sentinel2(str(product_xml), path.name, bands, stack)
        files = _band_files_in(path)
        if files:
            return _open_band_files(files, bands, stack, name=f"folder '{path}'")
        raise UrbanMTLError(
            f"The folder '{path}' is neither a Sentinel-2 SAFE product (no MTD_MSIL1C.xml or MTD_MSIL2A.xml) "
            f"nor a folder of single-band files named by band (e.g. T33UUU_20170216T102101_B02.jp2). Pass a "
            f"raster file, a SAFE folder or .zip, or the folder that holds the band files."
        )
    if path.suffix.lower() == ".zip" or _PRODUCT_XML_RE.match(path.name):
        return _open_sentinel2(str(path), path.name, bands, stack)
    sources = _vrt_sources(path, f"'{path.name}'") if _is_vrt_file(path) else []
    ds = _rasterio_open(str(path), path.name, stack)
    if ds.count == 0 and ds.subdatasets:
        if ds.driver == "SENTINEL2":
            return _open_sentinel2(str(path), path.name, bands, stack)
        raise UrbanMTLError(
            f"'{path.name}' is a container of {len(ds.subdatasets)} subdatasets, not one raster. Pass one of "
            f"them, e.g. {ds.subdatasets[0]}."
        )
    descriptions = [_band_label(ds, i) for i in range(1, ds.count + 1)]
    hint = ""
    if ds.count == 1 and _BAND_FILE_RE.search(path.name):
        hint = (" It looks like a single-band file of a granule: pass the folder that holds all band files, "
                "or all of them, to stack them.")
    layout, layout_note = None, ""
    if ds.count == len(LAYOUTS["L1C"]) and bands is None and not any(normalize_band_name(d) for d in descriptions):
        layout, why = layout_of_13_bands(_center_medians(ds))
        layout_note = f" (13 unnamed bands: {why}; name the bands with --bands if this is wrong)"
    try:
        idx = resolve_band_indices(ds.count, descriptions, bands=bands, layout=layout, source=f"'{path.name}'")
    except UrbanMTLError as exc:
        raise UrbanMTLError(str(exc) + hint) from None
    opened = _Opened(dataset=ds, indexes=[i + 1 for i in idx], name=f"'{path.name}'",
                     files=[str(path), *sources, *_dataset_files(ds)])
    opened.messages.append(
        f"{opened.name}: band mapping " + ", ".join(f"{b}=band {i + 1}" for b, i in zip(MODEL_BANDS, idx))
        + layout_note + "."
    )
    _collect_metadata(opened, ds.tags(), [ds.tags(i) for i in opened.indexes], str(path), None)
    return opened


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


def _center_medians(ds, size: int = 256) -> list[float]:
    """Median DN of each band over the valid pixels of a central window of at most size x size pixels
    (a cheap look at the content; nodata and all-zero pixels are left out)."""
    h, w = min(size, ds.height), min(size, ds.width)
    try:
        data = ds.read(window=Window((ds.width - w) // 2, (ds.height - h) // 2, w, h)).astype(np.float64)
    except READ_ERRORS as exc:
        raise damaged_input_error(f"'{Path(ds.name).name}'", exc) from None
    valid = ~np.all(data == 0, axis=0)
    for k, nodata in enumerate(ds.nodatavals):
        if nodata is not None and not math.isnan(nodata):
            valid &= data[k] != nodata
    valid &= np.all(np.isfinite(data), axis=0)
    return [float(np.median(band[valid])) if valid.any() else 0.0 for band in data]


def _rasterio_open(path: str, name: str, stack: ExitStack):
    try:
        with warnings.catch_warnings():
            # Containers (SAFE products, HDF) have no geotransform of their own; rasterio warns about it.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return stack.enter_context(rasterio.open(path))
    except RasterioIOError as exc:
        raise UrbanMTLError(
            f"GDAL cannot read the input {name}: {str(exc).splitlines()[0][:300]}. Check that it is a raster "
            f"file (GeoTIFF, VRT, JP2, ...) and not damaged."
        ) from None


def _band_label(ds, index: int) -> Optional[str]:
    """A band's name as the file gives it: its description, else a BANDNAME/BAND tag."""
    desc = ds.descriptions[index - 1]
    if desc and normalize_band_name(desc):
        return desc
    tags = ds.tags(index)
    for key in ("BANDNAME", "BAND", "band_name", "name"):
        if tags.get(key) and normalize_band_name(tags[key]):
            return tags[key]
    return desc


def _find_product_xml(folder: Path) -> Optional[Path]:
    for child in sorted(folder.iterdir()):
        if child.is_file() and _PRODUCT_XML_RE.match(child.name):
            return child
    return None


def _band_files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and _BAND_FILE_RE.search(p.name))


def _find_mtd_near(path: Path) -> Optional[Path]:
    """The product metadata (MTD_MSIL1C/2A.xml) in one of the 5 folders above a band file of a SAFE product
    (SAFE/GRANULE/<granule>/IMG_DATA[/R10m]/file.jp2)."""
    for parent in list(Path(os.path.abspath(path)).parents)[:5]:
        try:
            found = _find_product_xml(parent)
        except OSError:
            return None
        if found is not None:
            return found
    return None


# --- Sentinel-2 products: single-band files and SAFE products, stacked in a VRT ---


@dataclass
class _BandSource:
    """One band of one file or subdataset, with the grid it lies on."""

    path: str
    band: int
    name: str
    width: int
    height: int
    transform: Any
    crs: CRS
    dtype: str
    nodata: Optional[float]


def _open_band_files(paths: Sequence[Path], bands: Optional[Sequence[str]], stack: ExitStack,
                     name: str) -> _Opened:
    """Stack single-band files named by band (…_B02.jp2, …_B8A_20m.jp2) into the model's 10 bands."""
    by_band: dict[str, _BandSource] = {}
    ignored: list[str] = []
    for path in paths:
        match = _BAND_FILE_RE.search(path.name)
        band = normalize_band_name(match.group(1)) if match else None
        if band is None:
            ignored.append(path.name)
            continue
        if band not in MODEL_BANDS:
            continue
        with _rasterio_open_plain(path) as ds:
            if ds.count != 1:
                raise UrbanMTLError(
                    f"'{path.name}' has {ds.count} bands; a stack of band files needs one band per file."
                )
            src = _BandSource(os.path.abspath(path), 1, band, ds.width, ds.height, ds.transform, ds.crs,
                              ds.dtypes[0], ds.nodata)
        # L2A products hold some bands at several resolutions: keep the finest.
        if band not in by_band or abs(src.transform.a) < abs(by_band[band].transform.a):
            by_band[band] = src
    missing = [b for b in MODEL_BANDS if b not in by_band]
    if missing:
        found = ", ".join(sorted(by_band, key=MODEL_BANDS.index)) or "none"
        raise UrbanMTLError(
            f"The band files of {name} lack {', '.join(missing)} (found: {found}"
            + (f"; files without a band name: {', '.join(ignored[:5])}" if ignored else "")
            + f"). The model needs {', '.join(MODEL_BANDS)}, one file each, named like *_B02.jp2 or *_B8A_20m.jp2."
        )
    opened = _stack(by_band, name, stack)
    # Every band file given counts as input (also bands the model does not use): no output may replace one.
    opened.files = [str(p) for p in paths]
    if bands is not None:
        opened.messages.append(f"{name}: band names are taken from the file names; the given band names "
                               f"are not used.")
    mtd = _find_mtd_near(paths[0])
    if mtd is not None:
        opened.files.append(str(mtd))
    _collect_metadata(opened, {}, [], os.path.abspath(paths[0]), mtd)
    return opened


def _rasterio_open_plain(path: Path):
    try:
        return rasterio.open(str(path))
    except RasterioIOError as exc:
        raise UrbanMTLError(f"GDAL cannot read '{path.name}': {str(exc).splitlines()[0][:300]}.") from None


def _open_sentinel2(path: str, label: str, bands: Optional[Sequence[str]], stack: ExitStack) -> _Opened:
    """A SAFE product (folder's MTD xml, or .zip) through GDAL's SENTINEL2 driver: 10 m + 20 m subdatasets."""
    product = _rasterio_open(path, f"'{label}'", stack)
    subs = list(product.subdatasets)
    by_epsg: dict[str, dict[str, str]] = {}
    for sub in subs:
        m = re.search(r":(10m|20m|60m):(EPSG_\d+)$", sub)
        if m:
            by_epsg.setdefault(m.group(2), {})[m.group(1)] = sub
    usable = [e for e, res in by_epsg.items() if "10m" in res and "20m" in res]
    if not usable:
        raise UrbanMTLError(
            f"'{label}' opened as a {product.driver} dataset, but it has no 10 m and 20 m band subdatasets "
            f"(found: {', '.join(subs) or 'none'}). Pass a complete Level-1C or Level-2A SAFE product."
        )
    epsg = usable[0]
    by_band: dict[str, _BandSource] = {}
    files = [path, *_dataset_files(product)]
    for res in ("10m", "20m"):
        name = by_epsg[epsg][res]
        with rasterio.open(name) as sub:
            files += _dataset_files(sub)
            for i in range(1, sub.count + 1):
                band = normalize_band_name(_band_label(sub, i))
                if band in MODEL_BANDS and band not in by_band:
                    by_band[band] = _BandSource(name, i, band, sub.width, sub.height, sub.transform, sub.crs,
                                                sub.dtypes[i - 1], sub.nodatavals[i - 1])
    missing = [b for b in MODEL_BANDS if b not in by_band]
    if missing:
        raise UrbanMTLError(f"The Sentinel-2 product '{label}' lacks band(s) {', '.join(missing)}.")
    opened = _stack(by_band, f"'{label}'", stack)
    opened.files = files
    if len(usable) > 1:
        opened.messages.append(f"'{label}' spans several UTM zones; using {epsg.replace('_', ':')}.")
    if bands is not None:
        opened.messages.append(f"'{label}': band names come from the product; the given band names are not used.")
    _collect_metadata(opened, product.tags(), [], os.path.abspath(path), _product_xml_text(path))
    return opened


def _product_xml_text(path: str) -> Optional[Union[Path, str]]:
    """The product metadata of a SAFE: the MTD xml itself, or its text read from inside a .zip."""
    p = Path(path)
    if p.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(p) as zf:
                for member in zf.namelist():
                    if _PRODUCT_XML_RE.match(Path(member).name) and member.count("/") <= 1:
                        return zf.read(member).decode("utf-8", errors="replace")
        except (zipfile.BadZipFile, OSError):
            return None
        return None
    return p if p.is_file() else None


def _stack(by_band: dict[str, _BandSource], name: str, stack: ExitStack) -> _Opened:
    """A VRT of MODEL_BANDS (model order) on the grid of the finest band; coarser bands bilinearly resampled."""
    sources = [by_band[b] for b in MODEL_BANDS]
    ref = min(sources, key=lambda s: abs(s.transform.a))
    for s in sources:
        if s.crs != ref.crs:
            raise UrbanMTLError(
                f"The band files of {name} are in different coordinate systems ({s.name}: {s.crs}, "
                f"{ref.name}: {ref.crs}). Use the files of one granule."
            )
        if s.transform.b or s.transform.d:
            raise UrbanMTLError(f"Band {s.name} of {name} has a rotated grid; stack it with gdalwarp first.")
        left, top = s.transform.c, s.transform.f
        right, bottom = left + s.width * s.transform.a, top + s.height * s.transform.e
        ref_right = ref.transform.c + ref.width * ref.transform.a
        ref_bottom = ref.transform.f + ref.height * ref.transform.e
        tol = abs(s.transform.a)
        if (abs(left - ref.transform.c) > tol or abs(top - ref.transform.f) > tol
                or abs(right - ref_right) > tol or abs(bottom - ref_bottom) > tol):
            raise UrbanMTLError(
                f"Band {s.name} of {name} does not cover the same area as band {ref.name} "
                f"({left:.0f}..{right:.0f} x {bottom:.0f}..{top:.0f} versus {ref.transform.c:.0f}..{ref_right:.0f}"
                f" x {ref_bottom:.0f}..{ref.transform.f:.0f}). Use the band files of one granule."
            )
    xml = _vrt_xml(sources, ref)
    mem = stack.enter_context(MemoryFile(xml.encode("utf-8"), ext=".vrt"))
    ds = stack.enter_context(mem.open())
    opened = _Opened(dataset=ds, indexes=list(range(1, len(MODEL_BANDS) + 1)), name=name, fixed_band_order=True)
    coarse = [s.name for s in sources if abs(s.transform.a) > abs(ref.transform.a) * 1.001]
    opened.messages.append(
        f"{name}: stacked {', '.join(MODEL_BANDS)} on the {abs(ref.transform.a):g} m grid of {ref.name}"
        + (f"; {', '.join(coarse)} resampled bilinearly." if coarse else ".")
    )
    return opened


def _vrt_xml(sources: Sequence[_BandSource], ref: _BandSource) -> str:
    dtypes = {s.dtype for s in sources}
    dtype = _GDAL_TYPES.get(dtypes.pop(), "Float32") if len(dtypes) == 1 else "Float32"
    t = ref.transform
    lines = [
        f'<VRTDataset rasterXSize="{ref.width}" rasterYSize="{ref.height}">',
        f"  <SRS>{escape(ref.crs.to_wkt())}</SRS>",
        f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>",
    ]
    for k, s in enumerate(sources, start=1):
        # Sentinel-2 products mark nodata with DN 0 even where the files declare no nodata value.
        nodata = s.nodata if s.nodata is not None else 0
        st = s.transform
        x_off = (st.c - t.c) / t.a
        y_off = (st.f - t.f) / t.e
        x_size = s.width * st.a / t.a
        y_size = s.height * st.e / t.e
        lines += [
            f'  <VRTRasterBand dataType="{dtype}" band="{k}">',
            f"    <Description>{s.name}</Description>",
            f"    <NoDataValue>{nodata!r}</NoDataValue>",
            '    <SimpleSource resampling="bilinear">',
            f'      <SourceFilename relativeToVRT="0">{escape(s.path)}</SourceFilename>',
            f"      <SourceBand>{s.band}</SourceBand>",
            f'      <SrcRect xOff="0" yOff="0" xSize="{s.width}" ySize="{s.height}" />',
            f'      <DstRect xOff={quoteattr(repr(x_off))} yOff={quoteattr(repr(y_off))} '
            f'xSize={quoteattr(repr(x_size))} ySize={quoteattr(repr(y_size))} />',
            "    </SimpleSource>",
            "  </VRTRasterBand>",
        ]
    lines.append("</VRTDataset>")
    return "\n".join(lines)


_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
               "float32": "Float32", "float64": "Float64"}


# --- metadata: processing baseline and DN offsets ---


def _collect_metadata(opened: _Opened, dataset_tags: dict, band_tags: Sequence[dict], name_text: str,
                      mtd: Optional[Union[Path, str]]) -> None:
    """Fill opened.offsets / opened.baseline from GDAL tags, the product XML and the product name.

    dataset_tags: the dataset's metadata; band_tags: the metadata of the model bands, in model order.
    Offset keys are RADIO_ADD_OFFSET (L1C) and BOA_ADD_OFFSET (L2A), plain or with a band suffix
    (RADIO_ADD_OFFSET_B02) at dataset level.
    """
    per_band: dict[str, float] = {}
    for key, value in dataset_tags.items():
        key_u = key.upper()
        if key_u == "PROCESSING_BASELINE" and value and opened.baseline is None:
            opened.baseline, opened.baseline_source = value, "PROCESSING_BASELINE metadata"
        for okey in _OFFSET_KEYS:
            if key_u.startswith(okey) and _is_number(value):
                suffix = key_u[len(okey):].strip("_ ")
                target = normalize_band_name(suffix) if suffix else "*"
                if target:
                    per_band.setdefault(target, float(value))
                    opened.offset_source = f"{okey} metadata"
    for band, tags in zip(MODEL_BANDS, band_tags):
        for key, value in tags.items():
            if key.upper() in _OFFSET_KEYS and _is_number(value):
                per_band[band] = float(value)
                opened.offset_source = f"{key.upper()} metadata"
    if mtd is not None:
        _offsets_from_xml(opened, mtd, per_band)
    if per_band:
        default = per_band.get("*", 0.0)
        opened.offsets = np.array([per_band.get(b, default) for b in MODEL_BANDS], dtype=np.float32)
    if opened.baseline is None:
        m = _BASELINE_IN_NAME_RE.search(name_text)
        if m:
            opened.baseline, opened.baseline_source = f"{m.group(1)}.{m.group(2)}", "the product name"


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


def _offsets_from_xml(opened: _Opened, mtd: Union[Path, str], per_band: dict[str, float]) -> None:
    """Read PROCESSING_BASELINE and RADIO_ADD_OFFSET / BOA_ADD_OFFSET (band_id = ESA band order) from MTD xml."""
    try:
        root = ET.parse(mtd).getroot() if isinstance(mtd, Path) else ET.fromstring(mtd)
    except (ET.ParseError, OSError):
        return
    where = mtd.name if isinstance(mtd, Path) else "the product metadata"
    from_tags = bool(per_band)
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        text = (el.text or "").strip()
        if tag == "PROCESSING_BASELINE" and text and opened.baseline is None:
            opened.baseline, opened.baseline_source = text, where
        if tag in _OFFSET_KEYS and _is_number(text) and not from_tags:
            band_id = el.get("band_id") or el.get("bandId")
            order = LAYOUTS["L1C"]
            if band_id is not None and band_id.isdigit() and int(band_id) < len(order):
                per_band.setdefault(order[int(band_id)], float(text))
                opened.offset_source = f"{tag} in {where}"


def _resolve_offsets(opened: _Opened, explicit: Optional[float], messages: list[str]) -> tuple[np.ndarray, float]:
    """DN offsets for the model bands (explicit > metadata values > processing baseline) and the scale."""
    if explicit is not None:
        offsets = np.full(len(MODEL_BANDS), explicit, dtype=np.float32)
        messages.append(f"{opened.name}: using the given DN offset {explicit:g}.")
        return offsets, QUANTIFICATION_VALUE
    if opened.offsets is not None:
        offsets = opened.offsets
        if np.any(offsets != 0):
            messages.append(
                f"{opened.name}: applying the DN offset {_fmt_offsets(offsets)} ({opened.offset_source}): "
                f"reflectance = (DN + offset) / 10000."
            )
        return offsets, QUANTIFICATION_VALUE
    value = offset_for_baseline(opened.baseline)
    offsets = np.full(len(MODEL_BANDS), value, dtype=np.float32)
    if opened.baseline is not None:
        if value:
            messages.append(
                f"{opened.name}: processing baseline {opened.baseline} (from {opened.baseline_source}) "
                f"carries a DN offset; applying {value:g}: reflectance = (DN {value:+g}) / 10000."
            )
        else:
            messages.append(f"{opened.name}: processing baseline {opened.baseline}: no DN offset.")
    return offsets, QUANTIFICATION_VALUE


def _fmt_offsets(offsets: np.ndarray) -> str:
    return f"{offsets[0]:g}" if np.all(offsets == offsets[0]) else ", ".join(f"{v:g}" for v in offsets)


def _check_scale(scene: Scene, explicit_offset: Optional[float]) -> None:
    """Decide from the data type and a sample of the values what they are (core.input_checks: DN, reflectance,
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


# --- the files an input reads ---


_VSI_ARCHIVE_RE = re.compile(r"^/vsi(?:zip|tar|gzip|7z|rar)/(.+?\.(?:zip|tar|tgz|gz|7z|rar))(?=/|$)", re.IGNORECASE)
_DRIVER_PREFIX_RE = re.compile(r'^[A-Z][A-Z0-9_]+:(?:"([^"]+)"|([^:"]+))')


def _local_file(name: str) -> Optional[str]:
    """The file on disk behind a GDAL dataset name: itself, the archive of a /vsizip/ path, the file inside a
    driver prefix (SENTINEL2_L1C:/x/MTD.xml:10m:..., NETCDF:"f.nc":v); None for other virtual files."""
    if not name:
        return None
    m = _VSI_ARCHIVE_RE.match(name)
    if m:
        inner = m.group(1)
        return inner if inner.startswith("/") else os.path.abspath(inner)
    if name.startswith("/vsi"):
        return None
    if os.path.exists(name):
        return name
    m = _DRIVER_PREFIX_RE.match(name)
    if m:
        candidate = m.group(1) or m.group(2)
        return _local_file(candidate) if candidate and candidate != name else None
    return name


def _dataset_files(ds) -> list[str]:
    """The files GDAL says a dataset is made of (the raster, its sidecars, a VRT's or product's sources)."""
    try:
        names = list(ds.files or [])
    except Exception:           # pragma: no cover - drivers without a file list
        return []
    return [f for f in (_local_file(n) for n in names) if f]


def _is_vrt_file(path: Path) -> bool:
    if path.suffix.lower() == ".vrt":
        return True
    try:
        with open(path, "rb") as fh:
            return b"<VRTDataset" in fh.read(512)
    except OSError:
        return False


def _vrt_sources(path: Path, name: str, _seen: Optional[set] = None) -> list[str]:
    """Every file a VRT reads, through nested VRTs. Raises InputError naming a source that does not exist (GDAL
    would open the VRT and fail at the first read of its pixels)."""
    seen = _seen if _seen is not None else set()
    real = os.path.realpath(path)
    if real in seen:
        return []
    seen.add(real)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return []               # not VRT XML after all: GDAL says what is wrong when it opens it
    found: list[str] = []
    for el in root.iter():
        if el.tag not in ("SourceFilename", "SourceDataset") or not (el.text or "").strip():
            continue
        text = el.text.strip()
        if el.get("relativeToVRT", "0") == "1" and not text.startswith("/vsi"):
            text = os.path.join(os.path.dirname(os.path.abspath(path)), text)
        local = _local_file(text)
        if local is None:
            continue
        if not os.path.exists(local):
            raise InputError(
                f"The input is damaged or incomplete: {name}, its source '{local}' does not exist (GDAL cannot "
                f"read the pixels without it). Restore that file, or rebuild the VRT from the files you have "
                f"(gdalbuildvrt)."
            )
        found.append(local)
        if _is_vrt_file(Path(local)):
            found += _vrt_sources(Path(local), name, seen)
    return found


def _real_paths(paths: Sequence[str]) -> list[str]:
    return sorted({os.path.realpath(p) for p in paths if p})


# --- grids: georeferencing, warping, the scene window ---


def _check_georeferenced(ds, name: str) -> None:
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


def _needs_warp(ds) -> bool:
    t = ds.transform
    if ds.crs.is_geographic or not _is_metric(ds.crs) or t.b or t.d:
        return True
    return abs(abs(t.a) - TARGET_RES_M) > RES_TOLERANCE_M or abs(abs(t.e) - TARGET_RES_M) > RES_TOLERANCE_M


def utm_crs_for(lon: float, lat: float) -> CRS:
    """WGS 84 / UTM zone of a longitude/latitude (EPSG 326zz north, 327zz south)."""
    zone = min(60, max(1, int(math.floor((lon + 180.0) / 6.0)) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def _warp_to_utm(ds, name: str, stack: ExitStack):
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
    note = (f"{name}: pixels are {res[0]:.6g} x {res[1]:.6g} {what} in {_crs_label(ds.crs)}; warping on the "
            f"fly to 10 m in {_crs_label(utm)} (bilinear). The outputs are on that grid.")
    return vrt, note


def _crs_label(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_string()[:60] or "an unnamed CRS")


def _scene_window(ds, extent: Optional[Sequence[float]], extent_crs: Optional[str], original_crs: CRS,
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
            f"The extent ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) in {_crs_label(src_crs)} lies outside the "
            f"input {name}, which covers {b.left:.0f}..{b.right:.0f} x {b.bottom:.0f}..{b.top:.0f} in "
            f"{_crs_label(ds.crs)}. Choose an extent that overlaps the raster, or leave it out."
        )
    if (cr0, cc0, cr1, cc1) != (r0, c0, r1, c1):
        messages.append(f"The extent reaches beyond {name}; it was clipped to the raster.")
    return Window(cc0, cr0, cc1 - cc0, cr1 - cr0)
