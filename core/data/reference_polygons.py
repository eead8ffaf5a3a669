"""LCZ training-area polygons (KML, GeoPackage, GeoJSON) as a reference: read once, reprojected to the scene
CRS, and burnt into each window with `rasterio.features.rasterize` (training areas are small)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import bounds as geometry_bounds
from rasterio.features import rasterize
from rasterio.warp import transform_geom

from ..common.errors import UrbanMTLError
from ..common.lcz import ALIASES, LETTERS, NUM_CLASSES
from .reference_rasters import Bounds, crs_label

Shape = tuple[dict[str, Any], int, Bounds]  # geometry in the image CRS, LCZ code 1..17, its bounds

_LCZ_TEXT = re.compile(r"^(?:LCZ)?[\s_:-]*([0-9]+|[A-G])(?:\.0+)?$")


def parse_lcz_value(value: Any) -> Optional[int]:
    """LCZ code 1..17 of an attribute value, None for an empty value or 0; raises ValueError otherwise.

    Accepts numbers 1..17 and 101..107, and text "1".."17", "101".."107", "A".."G", optionally prefixed by
    "LCZ" (e.g. "LCZ 6", "lcz_G").
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(value)
    if isinstance(value, (int, np.integer, float, np.floating)):
        if not math.isfinite(float(value)) or float(value) != int(value):
            raise ValueError(value)
        number = int(value)
    else:
        text = str(value).strip().upper()
        if not text:
            return None
        match = _LCZ_TEXT.match(text)
        if not match:
            raise ValueError(value)
        token = match.group(1)
        if token.isalpha():
            return LETTERS.index(token) + 1
        number = int(token)
    if number == 0:
        return None
    if 1 <= number <= NUM_CLASSES:
        return number
    if number in ALIASES:
        return ALIASES[number]
    raise ValueError(value)


def enable_kml() -> None:
    """Let fiona read KML (WUDAPT's format): GDAL has the drivers, fiona just does not list them by default."""
    import fiona

    for driver in ("LIBKML", "KML"):
        fiona.supported_drivers.setdefault(driver, "r")


class PolygonReference:
    """LCZ training-area polygons, reprojected to the image CRS, burnt into windows as LCZ codes.

    Without `layer`, every layer holding `attribute` is read: WUDAPT KML files keep one folder (a layer for
    GDAL's LIBKML driver) per class.
    """

    def __init__(self, path: str | Path, attribute: str, layer: Optional[str], dst_crs: CRS,
                 image_bounds: Bounds) -> None:
        self.path = str(path)
        self.attribute = attribute
        enable_kml()
        layers = self._list_layers()
        if layer is not None and layer not in layers:
            raise UrbanMTLError(
                f"The LCZ polygon file '{self.path}' has no layer '{layer}'. Its layers: {', '.join(layers)}. "
                f"Set lcz_layer to one of them."
            )
        self.layers: list[str] = []
        shapes, invalid, total, fields_seen = self._read_layers([layer] if layer is not None else layers, dst_crs)
        if not self.layers:
            where = f"layer '{layer}'" if layer is not None else f"any of its layers ({', '.join(layers)})"
            raise UrbanMTLError(
                f"The LCZ polygon file '{self.path}' has no attribute '{attribute}' in {where}. Its attributes: "
                f"{', '.join(fields_seen) or 'none'}. Set lcz_attribute to the one holding the LCZ codes."
            )
        self.layer = ", ".join(self.layers)
        self._check_values(shapes, invalid, total)
        self.shapes = _overlapping(shapes, image_bounds)
        if not self.shapes:
            raise UrbanMTLError(
                f"None of the {len(shapes)} LCZ polygon(s) in '{self.path}' overlaps the image (bounds "
                f"{tuple(round(v, 1) for v in image_bounds)} in {crs_label(dst_crs)}). Give polygons inside "
                f"the scene."
            )

    def _list_layers(self) -> list[str]:
        import fiona

        try:
            return fiona.listlayers(self.path)
        except Exception as exc:  # fiona raises several types for unreadable files
            raise UrbanMTLError(
                f"Cannot read the LCZ polygons '{self.path}' ({exc}). Give a KML, GeoPackage or GeoJSON file."
            ) from None

    def _read_layers(self, names: Sequence[str], dst_crs: CRS
                     ) -> tuple[list[Shape], list[Any], int, list[str]]:
        """(shapes, attribute values that are no LCZ code, features read, attributes of the layers without
        the attribute) of the layers `names` that hold the attribute; those are added to self.layers."""
        import fiona

        shapes: list[Shape] = []
        invalid: list[Any] = []
        total = 0
        fields_seen: list[str] = []
        for name in names:
            with fiona.open(self.path, layer=name) as src:
                fields = list(src.schema["properties"])
                if self.attribute not in fields:
                    fields_seen.extend(f for f in fields if f not in fields_seen)
                    continue
                self.layers.append(name)
                if not src.crs_wkt:
                    raise UrbanMTLError(
                        f"The LCZ polygon file '{self.path}' (layer '{name}') has no coordinate reference system. "
                        f"Save it with one (KML is always EPSG:4326)."
                    )
                total += self._read_features(src, CRS.from_wkt(src.crs_wkt), dst_crs, shapes, invalid)
        return shapes, invalid, total, fields_seen

    def _read_features(self, src: Any, src_crs: CRS, dst_crs: CRS, shapes: list[Shape], invalid: list[Any]
                       ) -> int:
        """Append the layer's polygons with an LCZ code to `shapes` (reprojected) and the attribute values
        that are no code to `invalid`; returns the number of features."""
        total = 0
        for feature in src:
            total += 1
            geometry = feature["geometry"]
            if geometry is None:
                continue
            try:
                code = parse_lcz_value(feature["properties"][self.attribute])
            except ValueError:
                invalid.append(feature["properties"][self.attribute])
                continue
            if code is None:
                continue
            geom = transform_geom(src_crs, dst_crs, as_mapping(geometry))
            shapes.append((geom, code, geometry_bounds(geom)))
        return total

    def _check_values(self, shapes: list[Shape], invalid: list[Any], total: int) -> None:
        """Every attribute value is an LCZ code (or empty), and some polygon has one."""
        if invalid:
            shown = ", ".join(repr(v) for v in list(dict.fromkeys(map(str, invalid)))[:5])
            raise UrbanMTLError(
                f"The LCZ polygon file '{self.path}': attribute '{self.attribute}' has {len(invalid)} value(s) "
                f"that are not LCZ codes, e.g. {shown}. Use codes 1..17 or 101..107, or labels 1..10 / A..G."
            )
        if not shapes:
            raise UrbanMTLError(
                f"None of the {total} polygon(s) in '{self.path}' has an LCZ value in attribute "
                f"'{self.attribute}' (all empty or 0), so there is no reference. Fill in the LCZ codes."
            )

    def codes(self, dst_transform: Affine, height: int, width: int) -> np.ndarray:
        """(height, width) uint8 LCZ codes 1..17 of a window at 10 m, 0 where no polygon lies (later
        polygons win where they overlap). Only pixels whose centre is inside a polygon are burnt."""
        left, top = dst_transform * (0, 0)
        right, bottom = dst_transform * (width, height)
        x0, x1 = min(left, right), max(left, right)
        y0, y1 = min(top, bottom), max(top, bottom)
        hits = [(g, c) for g, c, b in self.shapes if b[0] < x1 and b[2] > x0 and b[1] < y1 and b[3] > y0]
        if not hits:
            return np.zeros((height, width), dtype=np.uint8)
        return rasterize(hits, out_shape=(height, width), transform=dst_transform, fill=0, dtype="uint8")

    def close(self) -> None:
        """Nothing stays open: polygons are held in memory."""


def _overlapping(shapes: list[Shape], image_bounds: Bounds) -> list[Shape]:
    """The shapes whose bounds overlap `image_bounds` (left, bottom, right, top)."""
    left, bottom, right, top = image_bounds
    return [s for s in shapes if s[2][0] < right and s[2][2] > left and s[2][1] < top and s[2][3] > bottom]


def as_mapping(geometry: Any) -> dict[str, Any]:
    """A GeoJSON-like dict from a fiona geometry (a Geometry object in fiona 1.9, a dict before)."""
    if isinstance(geometry, dict):
        return geometry
    interface = getattr(geometry, "__geo_interface__", None)
    if interface is not None:
        return dict(interface)
    return {"type": geometry["type"], "coordinates": geometry["coordinates"]}
