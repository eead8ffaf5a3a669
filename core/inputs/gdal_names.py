"""Sentinel-2 products named the way QGIS names them: a subdataset of GDAL's SENTINEL2 driver
(SENTINEL2_L1C:/…/MTD_MSIL1C.xml:10m:EPSG_32633, any resolution, L1C or L2A), a /vsizip/ path into the product's
.zip (to its MTD_*.xml or its .SAFE folder), or the two together. Each names the whole product, whose 10 bands the
engine maps (core.inputs.products.open_sentinel2), never only the 4 bands a 10 m subdataset layer carries."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import PurePosixPath
from typing import Optional

from ..common.bands import PRODUCT_XML_RE
from ..common.errors import UrbanMTLError
from ..common.product_names import SUBDATASET_RE, VSIZIP_RE


def sentinel2_product(name: str) -> Optional[str]:
    """What GDAL's SENTINEL2 driver should open for a Sentinel-2 product named the QGIS way (the MTD xml, in a
    /vsizip/ path where it lies in a .zip, or the .zip itself), or None when `name` is not such a name. Raises
    UrbanMTLError, naming the file, when the product it names does not exist."""
    match = SUBDATASET_RE.match(name)
    product = match.group("product") if match else name
    zipped = VSIZIP_RE.match(product)
    if zipped is None:
        if match is None:
            return None
        if not os.path.exists(product):
            raise UrbanMTLError(f"The input '{name}' is a Sentinel-2 subdataset of '{product}', which does not "
                                f"exist. Check the path, or open the product's .SAFE folder or .zip again.")
        return product
    archive = zipped.group("archive")
    archive = archive if re.match(r"^[A-Za-z]:", archive) or archive.startswith("/") else "/" + archive
    if not os.path.isfile(archive):
        raise UrbanMTLError(f"The input '{name}' lies in the archive '{archive}', which does not exist. Check the "
                            f"path of the downloaded product.")
    member = (zipped.group("member") or "").strip("/")
    if PRODUCT_XML_RE.match(PurePosixPath(member).name):
        return f"/vsizip/{archive}/{member}"
    return archive                      # the .zip itself, or its .SAFE folder: the driver finds the metadata


def zip_member_text(name: str) -> Optional[str]:
    """The text of a file named by a /vsizip/ path (the product metadata inside a .zip), None when unreadable."""
    zipped = VSIZIP_RE.match(name)
    if zipped is None or not zipped.group("member"):
        return None
    archive = zipped.group("archive")
    archive = archive if re.match(r"^[A-Za-z]:", archive) or archive.startswith("/") else "/" + archive
    try:
        with zipfile.ZipFile(archive) as zf:
            return zf.read(zipped.group("member")).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError, KeyError):
        return None
