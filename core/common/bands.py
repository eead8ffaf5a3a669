"""Sentinel-2 band catalogue: names, file-name patterns, known file layouts, and DN-to-reflectance conversion."""

from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from .errors import UrbanMTLError
from .spec import BASELINE_OFFSET, DN_SCALE, MODEL_BANDS

#: Native ground sampling distance of each band, in metres.
BAND_RESOLUTION_M: dict[str, int] = {
    "B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10,
    "B8A": 20, "B9": 60, "B10": 60, "B11": 20, "B12": 20,
}

#: Band orders of the stacks users bring, by layout name.
LAYOUTS: dict[str, tuple[str, ...]] = {
    # Level-1C, all 13 bands, B8A right after B8 (ESA order, GEE COPERNICUS/S2, So2Sat GUL tifs).
    "L1C": ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"),
    # Level-2A, 12 bands: no B10 (cirrus is not delivered at Level-2A).
    "L2A": ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"),
    # EuroSAT MS GeoTIFFs: 13 bands with B8A *last*.
    "EUROSAT": ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "B8A"),
    # Already in the model's order.
    "MODEL": MODEL_BANDS,
}

#: Layout assumed from the band count alone when a file has no usable band names. An unnamed 13-band stack
#: is L1C unless its pixels show the EuroSAT order (see layout_of_13_bands).
LAYOUT_BY_COUNT: dict[int, str] = {13: "L1C", 12: "L2A", 10: "MODEL"}

#: B10 (cirrus, 1375 nm) sees almost no ground through the water vapour above it: it is the darkest band of a
#: stack. An unnamed 13-band stack whose band 10 is below this share of band 11 has B10 at band 10, the EuroSAT
#: order; in the L1C order band 10 is B9 and band 11 is B10, ten times darker. Measured on the shared data:
#: band 10 / band 11 is at most 0.37 on the 181 EuroSAT patches (over water, where B11 is dark too) and at
#: least 10 on 253 crops of the L1C scene.
CIRRUS_CONTRAST = 0.6

#: DN scale of Sentinel-2 L1C/L2A products (core.common.spec.DN_SCALE, as a float): reflectance = (DN + offset) / 10000.
QUANTIFICATION_VALUE = float(DN_SCALE)

#: Offset of products of processing baseline 04.00 and later (RADIO_ADD_OFFSET / BOA_ADD_OFFSET; core.common.spec's
#: BASELINE_OFFSET, as a float).
BASELINE_04_OFFSET = float(BASELINE_OFFSET)

_BAND_RE = re.compile(r"^\s*(?:band[\s_-]*)?b0*(\d{1,2})(a?)\b", re.IGNORECASE)

#: A single-band file of a granule, named by its band (T33UUU_20170216T102101_B02.jp2, ..._B8A_20m.jp2).
BAND_FILE_RE = re.compile(r"(?:^|[_\-.])(B(?:0?[1-9]|1[0-2]|0?8A))(?:_\d+m)?\.(?:jp2|tiff?)$", re.IGNORECASE)
#: The product metadata of a SAFE product (MTD_MSIL1C.xml, MTD_MSIL2A.xml, or the older S2A_OPER_MTD_SAFL1C_*.xml).
PRODUCT_XML_RE = re.compile(r"^(MTD_MSIL(?:1C|2A)|S2[A-Z]_[A-Z]{4}_MTD_SAF.*)\.xml$", re.IGNORECASE)


def normalize_band_name(name: Optional[str]) -> Optional[str]:
    """Canonical name ("B2", "B8A", "B11") of a band label as files write it, or None if it is not one.

    Accepts "B2", "B02", "b02", "B8A", "B8a", "B08A", "band_2" style prefixes and GDAL SENTINEL2
    descriptions such as "B4, central wavelength 665 nm".
    """
    if not name:
        return None
    match = _BAND_RE.match(str(name))
    if not match:
        return None
    number, suffix = int(match.group(1)), match.group(2).upper()
    canonical = f"B{number}{suffix}"
    return canonical if canonical in BAND_RESOLUTION_M else None


def resolve_band_indices(
    count: int,
    descriptions: Sequence[Optional[str]] = (),
    bands: Optional[Sequence[str]] = None,
    layout: Optional[str] = None,
    source: str = "the input raster",
) -> list[int]:
    """0-based indices into a stack of `count` bands that give MODEL_BANDS, in the model's order.

    Precedence: `bands` (explicit name of every band in the file, in file order) > `layout`
    (a key of LAYOUTS) > band descriptions in the file (all of MODEL_BANDS must be found) >
    the layout implied by the band count (LAYOUT_BY_COUNT). Raises UrbanMTLError listing what was
    found when none of these resolves.
    """
    if bands is not None:
        names = [normalize_band_name(b) for b in bands]
        bad = [b for b, n in zip(bands, names) if n is None]
        if bad:
            raise UrbanMTLError(
                f"Unknown Sentinel-2 band name(s) {bad} given for {source}. Use names such as "
                f"B2, B02, B8A, B11."
            )
        if len(names) != count:
            raise UrbanMTLError(
                f"{len(names)} band names were given for {source}, but it has {count} bands. "
                f"Give one name per band, in the file's order."
            )
        return _indices_of(names, f"the band names given for {source}", source)
    if layout is not None:
        key = layout.upper()
        if key not in LAYOUTS:
            raise UrbanMTLError(
                f"Unknown band layout '{layout}' for {source}. Known layouts: {', '.join(LAYOUTS)}."
            )
        if len(LAYOUTS[key]) != count:
            raise UrbanMTLError(
                f"Layout {key} has {len(LAYOUTS[key])} bands but {source} has {count}. "
                f"Choose the layout that matches the file, or name its bands explicitly."
            )
        return _indices_of(list(LAYOUTS[key]), f"layout {key}", source)
    names = [normalize_band_name(d) for d in descriptions]
    if names and all(n in names for n in MODEL_BANDS):
        return [names.index(b) for b in MODEL_BANDS]
    if count in LAYOUT_BY_COUNT and not any(names):
        return _indices_of(list(LAYOUTS[LAYOUT_BY_COUNT[count]]), f"the {count}-band layout", source)
    found = ", ".join(str(d) if d else "(no name)" for d in descriptions) or "no band names"
    missing = [b for b in MODEL_BANDS if b not in names]
    raise UrbanMTLError(
        f"Cannot tell which bands of {source} are the 10 Sentinel-2 bands the model needs "
        f"({', '.join(MODEL_BANDS)}). The file has {count} band(s) with names: {found}"
        + (f"; missing: {', '.join(missing)}" if any(names) else "")
        + ". Name the bands explicitly (one name per band in file order, e.g. --bands B2 B3 ...) "
        "or use a 10-band, 12-band (L2A) or 13-band (L1C) Sentinel-2 stack."
    )


def _indices_of(names: Sequence[Optional[str]], what: str, source: str) -> list[int]:
    missing = [b for b in MODEL_BANDS if b not in names]
    if missing:
        raise UrbanMTLError(
            f"{what} of {source} lacks band(s) {', '.join(missing)}; the model needs "
            f"{', '.join(MODEL_BANDS)}."
        )
    return [list(names).index(b) for b in MODEL_BANDS]


def layout_of_13_bands(median_dn: Sequence[float]) -> tuple[str, str]:
    """("EUROSAT" or "L1C", a sentence saying why) for an unnamed 13-band stack, from each band's median DN.

    The two 13-band orders differ from band 9 on (L1C: B8A, B9, B10, B11, B12; EuroSAT: B9, B10, B11, B12,
    B8A), and B10 is far darker than any other band: when band 10 is below CIRRUS_CONTRAST times band 11,
    band 10 is B10 and the stack is in the EuroSAT order; otherwise it is read as L1C.
    """
    if len(median_dn) != 13:
        raise ValueError("layout_of_13_bands needs the median of each of 13 bands")
    band10, band11 = float(median_dn[9]), float(median_dn[10])
    if band11 > 0 and band10 < CIRRUS_CONTRAST * band11:
        return "EUROSAT", (f"band 10 is the dark cirrus band B10 (median DN {band10:.0f} against {band11:.0f} "
                           f"for band 11), so the EuroSAT order (B8A last) is used")
    return "L1C", "read in the Level-1C order (B8A after B8)"


def offset_for_baseline(baseline: Optional[str]) -> float:
    """The DN offset of a product given its processing baseline string ("02.04", "04.00", "N0400")."""
    if not baseline:
        return 0.0
    digits = re.sub(r"[^0-9.]", "", str(baseline))
    try:
        value = float(digits) if "." in digits else float(digits) / 100.0
    except ValueError:
        return 0.0
    return BASELINE_04_OFFSET if value >= 4.0 else 0.0


def dn_to_reflectance(dn: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """Top-of-atmosphere or surface reflectance (float32, ~0..1) from Sentinel-2 digital numbers.

    reflectance = (DN + offset) / 10000; offset is 0 before processing baseline 04.00 and -1000 after.
    """
    return ((np.asarray(dn, dtype=np.float32) + np.float32(offset)) / np.float32(QUANTIFICATION_VALUE))
