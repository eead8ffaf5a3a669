"""The files an input reads: GDAL dataset names traced to files on disk, the sources of (nested) VRTs.

open_scene lists them in Scene.files, so that no output may ever replace a file of the input
(core.outputs.check_outputs_apart).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Sequence

from ..common.errors import InputError

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


def dataset_files(ds) -> list[str]:
    """The files GDAL says a dataset is made of (the raster, its sidecars, a VRT's or product's sources)."""
    try:
        names = list(ds.files or [])
    except Exception:           # pragma: no cover - drivers without a file list
        return []
    return [f for f in (_local_file(n) for n in names) if f]


def is_vrt_file(path: Path) -> bool:
    if path.suffix.lower() == ".vrt":
        return True
    try:
        with open(path, "rb") as fh:
            return b"<VRTDataset" in fh.read(512)
    except OSError:
        return False


def vrt_sources(path: Path, name: str, _seen: Optional[set] = None) -> list[str]:
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
        if is_vrt_file(Path(local)):
            found += vrt_sources(Path(local), name, seen)
    return found


def real_paths(paths: Sequence[str]) -> list[str]:
    return sorted({os.path.realpath(p) for p in paths if p})

