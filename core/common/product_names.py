"""The names QGIS gives a Sentinel-2 product, recognised without GDAL: a subdataset of GDAL's SENTINEL2 driver
(SENTINEL2_L1C:/…/MTD_MSIL1C.xml:10m:EPSG_32633), a /vsizip/ path into the product's .zip, a .SAFE folder, its .zip
or its MTD_*.xml. The QGIS side uses it to hand such a name to the engine whole (a 10 m subdataset layer carries 4 of
the product's bands); core.inputs.gdal_names opens what it names."""

from __future__ import annotations

import re
from pathlib import PurePath, PurePosixPath

from .bands import PRODUCT_XML_RE

#: SENTINEL2_L1C:<product>:<resolution>:<EPSG_n> (GDAL's SENTINEL2 subdatasets; the product may be quoted).
SUBDATASET_RE = re.compile(r'^SENTINEL2_(?:L1C|L2A|L1B)(?:_TILE)?:"?(?P<product>.+?)"?:(?P<res>10m|20m|60m|TCI)'
                           r'(?::(?P<epsg>EPSG_\d+))?$', re.IGNORECASE)
#: /vsizip/<archive.zip>[/<member>] (also /vsizip// with an absolute Windows path, as GDAL writes it).
VSIZIP_RE = re.compile(r"^/vsizip//?(?P<archive>.+?\.zip)(?:/(?P<member>.*))?$", re.IGNORECASE)
#: A Sentinel-2 product's folder or archive name (S2A_MSIL1C_….SAFE, S2B_MSIL2A_….zip).
PRODUCT_FILE_RE = re.compile(r"^S2[A-D]_MSIL(?:1C|2A)_.*\.(?:SAFE|zip)$", re.IGNORECASE)


def is_product_name(text: str) -> bool:
    """Whether `text` names a whole Sentinel-2 product the QGIS way (see the module docstring)."""
    if not isinstance(text, str) or not text:
        return False
    if SUBDATASET_RE.match(text) or VSIZIP_RE.match(text):
        return True
    name = PurePosixPath(text.replace("\\", "/").rstrip("/")).name
    return bool(PRODUCT_XML_RE.match(name) or PRODUCT_FILE_RE.match(name))


def product_label(text: str) -> str:
    """A short name for the product `text` names: its .SAFE (or .zip) name without the ending."""
    match = SUBDATASET_RE.match(text)
    path = (match.group("product") if match else text).replace("\\", "/").rstrip("/")
    parts = [p for p in PurePosixPath(path).parts if p.upper().endswith((".SAFE", ".ZIP"))]
    return PurePath(parts[-1]).stem if parts else PurePosixPath(path).name
