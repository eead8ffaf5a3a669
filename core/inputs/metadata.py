"""The DN offsets of an input: read from GDAL tags, the product XML and the product name, or set by the caller.

Reflectance is (DN + offset) / 10000; the offset is the one the metadata gives per band (RADIO_ADD_OFFSET,
BOA_ADD_OFFSET), else the one the processing baseline implies (core.common.bands.offset_for_baseline).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..common.bands import LAYOUTS, MODEL_BANDS, QUANTIFICATION_VALUE, normalize_band_name, offset_for_baseline
from .opened import OpenedInput

_BASELINE_IN_NAME_RE = re.compile(r"_N(\d{2})(\d{2})_")
_OFFSET_KEYS = ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET")


def collect_metadata(opened: OpenedInput, dataset_tags: dict, band_tags: Sequence[dict], name_text: str,
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


def _offsets_from_xml(opened: OpenedInput, mtd: Union[Path, str], per_band: dict[str, float]) -> None:
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


def resolve_offsets(opened: OpenedInput, explicit: Optional[float], messages: list[str]) -> tuple[np.ndarray, float]:
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

