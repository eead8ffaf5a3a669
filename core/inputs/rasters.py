"""Opening one raster file and mapping its bands to the model's: band names, tags, the known 13-band layouts."""

from __future__ import annotations

import math
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from ..common.bands import BAND_FILE_RE, LAYOUTS, MODEL_BANDS, layout_of_13_bands, normalize_band_name, resolve_band_indices
from ..common.errors import UrbanMTLError
from .errors import READ_ERRORS, damaged_input_error
from .files import dataset_files
from .metadata import collect_metadata
from .opened import OpenedInput


def map_raster_bands(ds, path: Path, sources: Sequence[str], bands: Optional[Sequence[str]]) -> OpenedInput:
    """The input `ds` (one raster file at `path`, opened; `sources`: the files a VRT reads) with its model bands
    found: by `bands` (the Sentinel-2 name of every band, in file order), else by the names the file gives, else
    by a known layout of the band count. Collects the DN offsets the metadata gives."""
    descriptions = [band_label(ds, i) for i in range(1, ds.count + 1)]
    hint = ""
    if ds.count == 1 and BAND_FILE_RE.search(path.name):
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
    opened = OpenedInput(dataset=ds, indexes=[i + 1 for i in idx], name=f"'{path.name}'",
                         files=[str(path), *sources, *dataset_files(ds)])
    opened.messages.append(
        f"{opened.name}: band mapping " + ", ".join(f"{b}=band {i + 1}" for b, i in zip(MODEL_BANDS, idx))
        + layout_note + "."
    )
    collect_metadata(opened, ds.tags(), [ds.tags(i) for i in opened.indexes], str(path), None)
    return opened


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


def rasterio_open(path: str, name: str, stack: ExitStack):
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


def band_label(ds, index: int) -> Optional[str]:
    """A band's name as the file gives it: its description, else a BANDNAME/BAND tag."""
    desc = ds.descriptions[index - 1]
    if desc and normalize_band_name(desc):
        return desc
    tags = ds.tags(index)
    for key in ("BANDNAME", "BAND", "band_name", "name"):
        if tags.get(key) and normalize_band_name(tags[key]):
            return tags[key]
    return desc

