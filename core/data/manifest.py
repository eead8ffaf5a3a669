"""Scene manifests: the YAML/JSON file naming a Sentinel-2 raster and its HSE/LCZ references, read and checked.

Manifest schema (YAML or JSON mapping; relative paths are relative to the manifest's folder)::

    name: berlin_2017            # optional; default: the manifest's file name without suffix
    image: S2_T33UUU.tif         # required: any GDAL raster (GeoTIFF, VRT, ...) holding the Sentinel-2 bands
    bands: [B1, B2, ..., B12]    # optional: the name of every band in file order
    layout: L1C                  # optional: L1C, L2A, EUROSAT or MODEL (see core.common.bands.LAYOUTS)
    offset: 0                    # optional DN offset: reflectance = (DN + offset) / scale; -1000 for
                                 #   processing baseline >= 04.00; default: from the file's metadata, else 0
    scale: 10000                 # optional; use 1 for a raster that already holds reflectance
    nodata: 0                    # optional image nodata value; default: the raster's own nodata
    hse: hrl_imperviousness.tif  # optional HSE raster on any grid/CRS: fraction 0..1 or percent 0..100
    hse_scale: 0.01              # optional factor to 0..1; default: 0.01 for integer rasters, and for float
                                 #   rasters whose values exceed 1, else 1. Fractions such as 1/254 are allowed.
    hse_nodata: [254, 255]       # optional extra nodata codes (the raster's nodata always counts); values
                                 #   outside 0..1 after scaling never count as a reference
    hse_band: 1                  # optional band of the HSE raster (1-based)
    lcz: wudapt_lcz.tif          # optional LCZ raster: codes 1..17 or 1..10/101..107 (0 = none), or a
                                 #   17-band probability raster (band k = LCZ k)
    lcz_kind: codes              # optional: codes or probabilities; default from the band count (1 or 17)
    lcz_band: 1                  # optional band of a codes raster (1-based)
    lcz_scale: 1/255             # optional factor of a probability raster (rows are renormalised anyway)
    lcz_resampling: bilinear     # optional for probability rasters: bilinear (default) or nearest
    lcz_polygons: wudapt_ta.kml  # optional instead of lcz: KML/GPKG/GeoJSON training areas
    lcz_attribute: LCZ           # required with lcz_polygons: attribute with codes 1..17, 101..107, A..G
    lcz_layer: training_areas    # optional layer of a multi-layer file (default: every layer with lcz_attribute)

At least one of hse, lcz and lcz_polygons is required (core.data.scene describes how they are read).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..common.bands import LAYOUTS
from ..common.errors import UrbanMTLError

#: Every key a manifest may hold, with what it means (shown when a manifest has an unknown key).
MANIFEST_KEYS: dict[str, str] = {
    "name": "dataset name",
    "image": "Sentinel-2 raster (required)",
    "bands": "band names of the image in file order",
    "layout": f"band layout of the image ({', '.join(LAYOUTS)})",
    "offset": "DN offset (reflectance = (DN + offset) / scale)",
    "scale": "DN scale (default 10000)",
    "nodata": "image nodata value",
    "hse": "HSE reference raster",
    "hse_scale": "factor from raster values to 0..1",
    "hse_nodata": "extra HSE nodata codes",
    "hse_band": "band of the HSE raster",
    "lcz": "LCZ reference raster (codes or 17 probabilities)",
    "lcz_kind": "codes or probabilities",
    "lcz_band": "band of an LCZ codes raster",
    "lcz_scale": "factor of an LCZ probability raster",
    "lcz_resampling": "bilinear or nearest (probability rasters)",
    "lcz_polygons": "LCZ training-area polygons (KML/GPKG/GeoJSON)",
    "lcz_attribute": "polygon attribute holding the LCZ code",
    "lcz_layer": "layer of the polygon file",
}


@dataclass
class SceneSpec:
    """A parsed scene manifest (see the module docstring); paths are absolute."""

    name: str
    source: str
    image: Path
    bands: Optional[list[str]] = None
    layout: Optional[str] = None
    offset: Optional[float] = None
    scale: Optional[float] = None       # None: the reader decides (10000, or 1 for reflectance rasters)
    nodata: Optional[float] = None
    hse: Optional[Path] = None
    hse_scale: Optional[float] = None
    hse_nodata: list[float] = field(default_factory=list)
    hse_band: int = 1
    lcz: Optional[Path] = None
    lcz_kind: Optional[str] = None
    lcz_band: int = 1
    lcz_scale: float = 1.0
    lcz_resampling: str = "bilinear"
    lcz_polygons: Optional[Path] = None
    lcz_attribute: Optional[str] = None
    lcz_layer: Optional[str] = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], base_dir: str | Path, source: str) -> "SceneSpec":
        """Validate a manifest mapping; `source` names it in messages, `base_dir` anchors relative paths."""
        _check_keys(mapping, source)
        base = Path(base_dir)
        m = dict(mapping)
        spec = cls(
            name=str(m.get("name") or Path(source).stem),
            source=source,
            image=_path(m["image"], base, "image", source),
            bands=_str_list(m.get("bands"), "bands", source),
            layout=_optional_str(m.get("layout"), "layout", source),
            offset=_number(m.get("offset"), "offset", source),
            scale=_number(m.get("scale"), "scale", source),
            nodata=_number(m.get("nodata"), "nodata", source),
            hse=_path(m["hse"], base, "hse", source) if m.get("hse") else None,
            hse_scale=_number(m.get("hse_scale"), "hse_scale", source),
            hse_nodata=_number_list(m.get("hse_nodata"), "hse_nodata", source),
            hse_band=_band(m.get("hse_band", 1), "hse_band", source),
            lcz=_path(m["lcz"], base, "lcz", source) if m.get("lcz") else None,
            lcz_kind=_choice(m.get("lcz_kind"), "lcz_kind", ("codes", "probabilities"), source),
            lcz_band=_band(m.get("lcz_band", 1), "lcz_band", source),
            lcz_scale=_number(m.get("lcz_scale", 1.0), "lcz_scale", source),
            lcz_resampling=_choice(m.get("lcz_resampling", "bilinear"), "lcz_resampling",
                                   ("bilinear", "nearest"), source),
            lcz_polygons=(_path(m["lcz_polygons"], base, "lcz_polygons", source)
                          if m.get("lcz_polygons") else None),
            lcz_attribute=_optional_str(m.get("lcz_attribute"), "lcz_attribute", source),
            lcz_layer=_optional_str(m.get("lcz_layer"), "lcz_layer", source),
        )
        spec._check()
        return spec

    def _check(self) -> None:
        """The rules between keys: a positive scale, one LCZ reference at most, some reference at all."""
        source = self.source
        if self.scale is not None and self.scale <= 0:
            raise UrbanMTLError(f"scale in {source} must be a positive number (10000 for Sentinel-2 DN).")
        if self.hse is None and self.lcz is None and self.lcz_polygons is None:
            raise UrbanMTLError(
                f"The scene manifest {source} names no reference. Add 'hse:', 'lcz:' or 'lcz_polygons:'."
            )
        if self.lcz is not None and self.lcz_polygons is not None:
            raise UrbanMTLError(
                f"The scene manifest {source} has both 'lcz' and 'lcz_polygons'. Keep one LCZ reference."
            )
        if self.lcz_polygons is not None and not self.lcz_attribute:
            raise UrbanMTLError(
                f"The scene manifest {source} has 'lcz_polygons' but no 'lcz_attribute'. Name the polygon "
                f"attribute that holds the LCZ codes (e.g. lcz_attribute: LCZ)."
            )


def _check_keys(mapping: Any, source: str) -> None:
    """A mapping, with known keys only and an image."""
    if not isinstance(mapping, Mapping):
        raise UrbanMTLError(
            f"The scene manifest {source} must be a mapping of keys to values (e.g. 'image: s2.tif'), "
            f"not {type(mapping).__name__}."
        )
    unknown = [k for k in mapping if k not in MANIFEST_KEYS]
    if unknown:
        raise UrbanMTLError(
            f"The scene manifest {source} has unknown key(s) {', '.join(map(str, unknown))}. Valid keys: "
            f"{', '.join(MANIFEST_KEYS)}."
        )
    if "image" not in mapping or not mapping["image"]:
        raise UrbanMTLError(
            f"The scene manifest {source} has no 'image' key. Add 'image: <Sentinel-2 raster>'."
        )


def load_manifest(path: str | Path) -> SceneSpec:
    """Read and validate a scene manifest file (YAML or JSON); see the module docstring for the keys."""
    path = Path(path)
    mapping = parse_manifest_text(_read_text(path), str(path))
    return SceneSpec.from_mapping(mapping, path.parent, str(path))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UrbanMTLError(f"Cannot read the scene manifest '{path}' ({exc}). Give a YAML or JSON text file.") \
            from None


def parse_manifest_text(text: str, source: str) -> Any:
    """The object in a YAML or JSON text (JSON first, since YAML may not read every JSON), or UrbanMTLError."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UrbanMTLError(f"Cannot parse the scene manifest '{source}': {exc}. Fix its YAML/JSON syntax.") \
            from None


# --- manifest value checks (each names the key and the manifest) ---


def _path(value: Any, base: Path, key: str, source: str) -> Path:
    if not isinstance(value, (str, Path)):
        raise UrbanMTLError(f"'{key}' in {source} must be a file path, got {value!r}.")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.exists():
        raise UrbanMTLError(
            f"The {key} file '{path}' named in {source} does not exist. Fix the path (relative paths are "
            f"relative to the manifest's folder)."
        )
    return path


_FRACTION = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def _number(value: Any, key: str, source: str) -> Optional[float]:
    """A number from a manifest value: int, float, or text such as "0.01" or "1/255"; None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        match = _FRACTION.match(text)
        if match and float(match.group(2)) != 0:
            return float(match.group(1)) / float(match.group(2))
        try:
            return float(text)
        except ValueError:
            pass
    raise UrbanMTLError(f"'{key}' in {source} must be a number (e.g. 0.01 or 1/255), got {value!r}.")


def _number_list(value: Any, key: str, source: str) -> list[float]:
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in (_number(x, key, source) for x in values) if v is not None]


def _band(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UrbanMTLError(f"'{key}' in {source} must be a band number 1, 2, ..., got {value!r}.")
    return value


def _optional_str(value: Any, key: str, source: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, (str, int)):
        raise UrbanMTLError(f"'{key}' in {source} must be a text value, got {value!r}.")
    return str(value)


def _str_list(value: Any, key: str, source: str) -> Optional[list[str]]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise UrbanMTLError(f"'{key}' in {source} must be a list of band names, e.g. [B2, B3, B4, ...].")
    return [str(v) for v in value]


def _choice(value: Any, key: str, choices: Sequence[str], source: str) -> Optional[str]:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in choices:
        raise UrbanMTLError(f"'{key}' in {source} is {value!r}; choose one of: {', '.join(choices)}.")
    return text
