"""Sentinel-2 products opened as one 10-band VRT in model order: the band files of a granule, SAFE products.

Single-band files (a folder, a glob pattern or several paths) are recognised by their names (…_B02.jp2,
…_B8A_20m.jp2); a SAFE folder, its .zip or its MTD_MSI*.xml is read through GDAL's SENTINEL2 driver (the 10 m and
20 m subdatasets). Both are stacked in a VRT on the grid of the finest band, coarser bands resampled bilinearly.
"""

from __future__ import annotations

import os
import re
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union
from xml.sax.saxutils import escape, quoteattr

import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.io import MemoryFile

from ..common.bands import BAND_FILE_RE, MODEL_BANDS, PRODUCT_XML_RE, normalize_band_name
from ..common.errors import UrbanMTLError
from .files import dataset_files
from .gdal_names import zip_member_text
from .metadata import collect_metadata
from .opened import OpenedInput
from .rasters import band_label, rasterio_open


def find_product_xml(folder: Path) -> Optional[Path]:
    for child in sorted(folder.iterdir()):
        if child.is_file() and PRODUCT_XML_RE.match(child.name):
            return child
    return None


def band_files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and BAND_FILE_RE.search(p.name))


def _find_mtd_near(path: Path) -> Optional[Path]:
    """The product metadata (MTD_MSIL1C/2A.xml) in one of the 5 folders above a band file of a SAFE product
    (SAFE/GRANULE/<granule>/IMG_DATA[/R10m]/file.jp2)."""
    for parent in list(Path(os.path.abspath(path)).parents)[:5]:
        try:
            found = find_product_xml(parent)
        except OSError:
            return None
        if found is not None:
            return found
    return None


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


def open_band_files(paths: Sequence[Path], bands: Optional[Sequence[str]], stack: ExitStack,
                     name: str) -> OpenedInput:
    """Stack single-band files named by band (…_B02.jp2, …_B8A_20m.jp2) into the model's 10 bands."""
    by_band: dict[str, _BandSource] = {}
    ignored: list[str] = []
    for path in paths:
        match = BAND_FILE_RE.search(path.name)
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
    collect_metadata(opened, {}, [], os.path.abspath(paths[0]), mtd)
    return opened


def _rasterio_open_plain(path: Path):
    try:
        return rasterio.open(str(path))
    except RasterioIOError as exc:
        raise UrbanMTLError(f"GDAL cannot read '{path.name}': {str(exc).splitlines()[0][:300]}.") from None


def open_sentinel2(path: str, label: str, bands: Optional[Sequence[str]], stack: ExitStack) -> OpenedInput:
    """A SAFE product (folder's MTD xml, or .zip) through GDAL's SENTINEL2 driver: 10 m + 20 m subdatasets."""
    product = rasterio_open(path, f"'{label}'", stack)
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
    files = [path, *dataset_files(product)]
    for res in ("10m", "20m"):
        name = by_epsg[epsg][res]
        with rasterio.open(name) as sub:
            files += dataset_files(sub)
            for i in range(1, sub.count + 1):
                band = normalize_band_name(band_label(sub, i))
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
    collect_metadata(opened, product.tags(), [], os.path.abspath(path), _product_xml_text(path))
    return opened


def _product_xml_text(path: str) -> Optional[Union[Path, str]]:
    """The product metadata of a SAFE: the MTD xml itself, or its text read from inside a .zip."""
    if path.lower().startswith("/vsizip/"):
        return zip_member_text(path)
    p = Path(path)
    if p.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(p) as zf:
                for member in zf.namelist():
                    if PRODUCT_XML_RE.match(Path(member).name) and member.count("/") <= 1:
                        return zf.read(member).decode("utf-8", errors="replace")
        except (zipfile.BadZipFile, OSError):
            return None
        return None
    return p if p.is_file() else None


def _stack(by_band: dict[str, _BandSource], name: str, stack: ExitStack) -> OpenedInput:
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
    opened = OpenedInput(dataset=ds, indexes=list(range(1, len(MODEL_BANDS) + 1)), name=name)
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

