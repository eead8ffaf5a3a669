"""Scene datasets: a Sentinel-2 raster plus HSE/LCZ references on any grid, described by a YAML/JSON manifest.

Manifest schema (YAML or JSON mapping; relative paths are relative to the manifest's folder)::

    name: berlin_2017            # optional; default: the manifest's file name without suffix
    image: S2_T33UUU.tif         # required: any GDAL raster (GeoTIFF, VRT, ...) holding the Sentinel-2 bands
    bands: [B1, B2, ..., B12]    # optional: the name of every band in file order
    layout: L1C                  # optional: L1C, L2A, EUROSAT or MODEL (see core.bands.LAYOUTS)
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

At least one of hse, lcz and lcz_polygons is required. References are brought onto the image grid window by
window: HSE averaged onto the 20 m grid aligned with the image, LCZ codes nearest onto the 10 m grid, probability
rasters bilinear or nearest onto the 10 m grid, polygons burnt into the 10 m grid. Nothing is read whole.

Sampling: the usable scene (rows and columns rounded down to even numbers) is cut into square blocks of
2 x patch_size pixels (a last strip narrower than patch_size joins its neighbour). Training windows are drawn at
random even offsets entirely inside one block (blocks chosen in proportion to their area), redrawn when more
than half the window is image nodata or it holds no reference. Evaluation tiles cover each block with windows
of patch_size, the last one in a row or column aligned with the block's far edge.
"""

from __future__ import annotations

import copy
import json
import math
import re
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..bands import LAYOUTS, MODEL_BANDS
from ..raster import Scene, open_scene
from ..errors import UrbanMTLError
from ..lcz import NUM_CLASSES
from .base import (
    MAX_NODATA_SHARE,
    Dataset,
    apply_image_nodata,
    check_val_fraction,
    codes_to_onehot,
    renormalize_rows,
)
from .references import (
    PolygonReference,
    RasterReference,
    codes_prepare,
    hse_prepare,
    open_raster,
    probabilities_prepare,
)

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

#: Attempts at a training window before the best one seen is kept (nodata-heavy scenes).
MAX_DRAWS = 32
#: Training windows per polygon and epoch when the LCZ reference is training-area polygons only.
POLYGON_WINDOWS = 8


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
        if spec.scale is not None and spec.scale <= 0:
            raise UrbanMTLError(f"scale in {source} must be a positive number (10000 for Sentinel-2 DN).")
        if spec.hse is None and spec.lcz is None and spec.lcz_polygons is None:
            raise UrbanMTLError(
                f"The scene manifest {source} names no reference. Add 'hse:', 'lcz:' or 'lcz_polygons:'."
            )
        if spec.lcz is not None and spec.lcz_polygons is not None:
            raise UrbanMTLError(
                f"The scene manifest {source} has both 'lcz' and 'lcz_polygons'. Keep one LCZ reference."
            )
        if spec.lcz_polygons is not None and not spec.lcz_attribute:
            raise UrbanMTLError(
                f"The scene manifest {source} has 'lcz_polygons' but no 'lcz_attribute'. Name the polygon "
                f"attribute that holds the LCZ codes (e.g. lcz_attribute: LCZ)."
            )
        return spec


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


def block_edges(size: int, block: int, patch: int, axis: str, source: str) -> list[tuple[int, int]]:
    """[start, end) pixel ranges cutting `size` (rounded down to even) into blocks of `block` px.

    A last range narrower than `patch` joins the one before it, so every block fits at least one patch and
    every pixel belongs to a block. Raises UrbanMTLError when the scene is smaller than one patch.
    """
    usable = size - size % 2
    if usable < patch:
        raise UrbanMTLError(
            f"The image of {source} has {size} {axis}, fewer than patch_size {patch}. Use a smaller patch_size "
            f"(a multiple of 8) or a larger scene."
        )
    edges = [(s, min(s + block, usable)) for s in range(0, usable, block)]
    if len(edges) > 1 and edges[-1][1] - edges[-1][0] < patch:
        edges[-2:] = [(edges[-2][0], usable)]
    return edges


def tile_offsets(start: int, end: int, patch: int) -> list[int]:
    """Window starts covering [start, end) with windows of `patch`; the last aligned with `end`."""
    offsets = list(range(start, end - patch + 1, patch))
    if offsets[-1] + patch < end:
        offsets.append(end - patch)
    return offsets


Block = tuple[int, int, int, int]  # row0, row1, col0, col1 in 10 m image pixels


class SceneDataset(Dataset):
    """A Sentinel-2 scene with HSE/LCZ references (or the blocks of it a split assigned to this part)."""

    format = "scene"

    def __init__(self, spec: SceneSpec, patch_size: int, group: Optional[str] = None) -> None:
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.path = spec.source
        self.group = group                 # the folder of manifests this scene came from, if any
        self.patch_size = int(patch_size)
        self.subset: Optional[str] = None
        self.split_info: Optional[dict[str, Any]] = None
        self._stack: Optional[ExitStack] = None
        self._scene: Optional[Scene] = None
        scene = self._image()
        self.height, self.width = scene.height, scene.width
        self.crs = scene.crs
        self.transform = scene.transform
        # (west, south, east, north), as rasterio's dataset bounds.
        self.bounds = tuple(rasterio.transform.array_bounds(self.height, self.width, self.transform))
        self.reader_notes = list(scene.messages)
        block = 2 * self.patch_size
        rows = block_edges(self.height, block, self.patch_size, "rows", spec.source)
        cols = block_edges(self.width, block, self.patch_size, "columns", spec.source)
        self.blocks: list[Block] = [(r0, r1, c0, c1) for r0, r1 in rows for c0, c1 in cols]
        self._hse_ref: Optional[RasterReference] = None
        self._lcz_ref: Optional[RasterReference] = None
        self._lcz_polygons: Optional[PolygonReference] = None
        self._open_references(check=True)
        self.has_hse = spec.hse is not None
        self.has_lcz = spec.lcz is not None or spec.lcz_polygons is not None

    # --- files ---

    def _image(self) -> Scene:
        """The image opened by the engine's reader (`core.raster.open_scene`): band mapping, DN offset and
        scale, nodata and its filling are decided there, for training exactly as for mapping. Manifest keys
        (bands/layout, offset, scale, nodata) override what the reader would find by itself."""
        if self._scene is None:
            spec = self.spec
            if spec.layout is not None and spec.layout.upper() not in LAYOUTS:
                raise UrbanMTLError(f"Unknown band layout '{spec.layout}' for {spec.source}. Known layouts: "
                                    f"{', '.join(LAYOUTS)}.")
            bands = spec.bands if spec.bands is not None else (
                list(LAYOUTS[spec.layout.upper()]) if spec.layout else None)
            stack = ExitStack()
            try:
                scene = stack.enter_context(open_scene(str(spec.image), bands=bands, offset=spec.offset))
            except UrbanMTLError as exc:
                stack.close()
                raise UrbanMTLError(f"The image of {spec.source}: {exc}") from None
            if spec.scale is not None:
                scene.scale = float(spec.scale)
            if spec.nodata is not None:
                scene.nodata = [float(spec.nodata)] * len(scene.indexes)
            self._stack, self._scene = stack, scene
        return self._scene

    def _open_references(self, check: bool) -> None:
        """Open the reference readers; with `check` (first opening), verify overlap and that some reference
        is valid, settle the HSE scale and LCZ kind (stored in the spec, so split parts skip the checks) and
        read the polygons."""
        spec = self.spec
        if spec.hse is not None:
            ref = RasterReference(spec.hse, [spec.hse_band], Resampling.average, f"HSE reference of {spec.source}")
            nodata = list(spec.hse_nodata) + ([ref.nodata] if ref.nodata is not None else [])
            if check:
                sample = ref.sample(self.crs, self.bounds)
                if spec.hse_scale is None:
                    spec.hse_scale = self._guess_hse_scale(ref, sample, nodata)
                ref.prepare = hse_prepare(spec.hse_scale, nodata)
                if not np.isfinite(ref.prepare(sample)).any():
                    raise UrbanMTLError(
                        f"The HSE reference '{spec.hse}' of {spec.source} is all nodata over the image (nodata "
                        f"codes {sorted(set(nodata))}, valid range 0..1 after scale {spec.hse_scale:g}). Check "
                        f"hse_scale / hse_nodata or give a reference with data over the scene."
                    )
            ref.prepare = hse_prepare(spec.hse_scale, nodata)
            ref.attach(self.crs, self.transform, self.height, self.width)
            self._hse_ref = ref
        if spec.lcz is not None:
            with open_raster(spec.lcz, f"LCZ reference of {spec.source}") as probe:
                count = probe.count
            if spec.lcz_kind is None:
                if count == 1:
                    spec.lcz_kind = "codes"
                elif count == NUM_CLASSES:
                    spec.lcz_kind = "probabilities"
                else:
                    raise UrbanMTLError(
                        f"The LCZ reference '{spec.lcz}' of {spec.source} has {count} bands: neither one band "
                        f"of codes nor {NUM_CLASSES} probability bands. Set lcz_kind (codes with lcz_band, or "
                        f"probabilities = bands 1..{NUM_CLASSES})."
                    )
            if spec.lcz_kind == "codes":
                ref = RasterReference(spec.lcz, [spec.lcz_band], Resampling.nearest,
                                      f"LCZ reference of {spec.source}")
                ref.prepare = codes_prepare(ref.nodata)
            else:
                if count < NUM_CLASSES:
                    raise UrbanMTLError(
                        f"The LCZ probability raster '{spec.lcz}' of {spec.source} has {count} bands; "
                        f"{NUM_CLASSES} are needed (band k = LCZ k). Give all {NUM_CLASSES} bands."
                    )
                resampling = Resampling.bilinear if spec.lcz_resampling == "bilinear" else Resampling.nearest
                ref = RasterReference(spec.lcz, list(range(1, NUM_CLASSES + 1)), resampling,
                                      f"LCZ reference of {spec.source}")
                ref.prepare = probabilities_prepare(spec.lcz_scale, ref.nodata)
            if check and not np.isfinite(ref.prepare(ref.sample(self.crs, self.bounds))).any():
                raise UrbanMTLError(
                    f"The LCZ reference '{spec.lcz}' of {spec.source} has no LCZ value over the image "
                    f"(all 0/nodata). Give a reference with LCZ codes 1..17 (or 101..107) over the scene."
                )
            ref.attach(self.crs, self.transform, self.height, self.width)
            self._lcz_ref = ref
        if spec.lcz_polygons is not None and check:
            # Polygons live in memory and are never modified: split parts share them.
            self._lcz_polygons = PolygonReference(
                spec.lcz_polygons, spec.lcz_attribute or "", spec.lcz_layer, self.crs, self.bounds)

    @staticmethod
    def _guess_hse_scale(ref: RasterReference, sample: np.ndarray, nodata: Sequence[float]) -> float:
        """0.01 (percent) for integer rasters or float rasters with valid values above 1; else 1 (fraction)."""
        if np.issubdtype(ref.dtype, np.integer):
            return 0.01
        values = sample[np.isfinite(sample) & ~np.isin(sample, np.asarray(list(nodata), dtype=np.float64))]
        values = values[(values >= 0) & (values <= 100)]
        return 0.01 if values.size and float(values.max()) > 1.0 + 1e-6 else 1.0

    def close(self) -> None:
        for ref in (self._hse_ref, self._lcz_ref):
            if ref is not None:
                ref.close()
        if self._stack is not None:
            self._stack.close()
        self._stack, self._scene = None, None

    # --- sampling ---

    def __len__(self) -> int:
        by_area = max(1, math.ceil(self.area_px() / self.patch_size ** 2))
        centres = self._polygon_centres()
        if centres is None:
            return by_area
        # Training areas cover a small part of a scene: an epoch of POLYGON_WINDOWS windows per polygon.
        return max(1, min(by_area, POLYGON_WINDOWS * len(centres)))

    def _polygon_centres(self) -> Optional[list[tuple[float, float, int]]]:
        """(row, col, block) of the centre of every training polygon inside this dataset's blocks, when the
        LCZ reference is polygons only (then windows are drawn around them); None otherwise."""
        if self._lcz_polygons is None or self._lcz_ref is not None:
            return None
        if getattr(self, "_centres", None) is None:
            inverse = ~self.transform
            centres = []
            for _, _, (x0, y0, x1, y1) in self._lcz_polygons.shapes:
                col, row = inverse * ((x0 + x1) / 2, (y0 + y1) / 2)
                for b, (r0, r1, c0, c1) in enumerate(self.blocks):
                    if r0 <= row < r1 and c0 <= col < c1:
                        centres.append((row, col, b))
                        break
            self._centres = centres
        return self._centres or None

    def area_px(self) -> int:
        """Pixels (10 m) in this dataset's blocks."""
        return int(sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in self.blocks))

    def tiles(self) -> list[tuple[int, int]]:
        """(row, col) of the upper-left pixel of every evaluation tile, in evaluation order."""
        p = self.patch_size
        out: list[tuple[int, int]] = []
        for r0, r1, c0, c1 in self.blocks:
            out.extend((r, c) for r in tile_offsets(r0, r1, p) for c in tile_offsets(c0, c1, p))
        return out

    def num_eval_samples(self) -> int:
        return len(self.tiles())

    def _draw(self, rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
        """`count` random training windows: a block in proportion to its area, then even offsets inside it.
        With training polygons only, a window around a random polygon's centre (shifted at random by up to a
        quarter window), kept inside the polygon's block."""
        p = self.patch_size
        centres = self._polygon_centres()
        if centres is not None:
            windows = []
            for k in rng.integers(0, len(centres), size=count):
                row, col, b = centres[int(k)]
                r0, r1, c0, c1 = self.blocks[b]
                shift = rng.integers(-p // 4, p // 4 + 1, size=2)
                r = int(min(max(row - p / 2 + shift[0], r0), r1 - p)) // 2 * 2
                c = int(min(max(col - p / 2 + shift[1], c0), c1 - p)) // 2 * 2
                windows.append((max(r, r0 + r0 % 2), max(c, c0 + c0 % 2)))
            return windows
        areas = np.array([(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in self.blocks], dtype=np.float64)
        chosen = rng.choice(len(self.blocks), size=count, p=areas / areas.sum())
        windows = []
        for b in chosen:
            r0, r1, c0, c1 = self.blocks[int(b)]
            # Even offsets keep the 20 m HSE grid of the window on the 20 m grid of the scene.
            r = r0 + 2 * int(rng.integers(0, (r1 - r0 - p) // 2 + 1))
            c = c0 + 2 * int(rng.integers(0, (c1 - c0 - p) // 2 + 1))
            windows.append((r, c))
        return windows

    def _plan(self, training: bool, rng: Optional[np.random.Generator]) -> list[tuple[int, int]]:
        if training:
            if rng is None:
                raise ValueError("a training plan needs a random generator")
            return self._draw(rng, len(self))
        return self.tiles()

    def _read(self, units: Sequence[tuple[int, int]], training: bool, rng: Optional[np.random.Generator]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        samples = []
        for window in units:
            sample = self._read_window(*window)
            if training and rng is not None:
                sample = self._redraw_if_unusable(sample, rng)
            samples.append(sample)
        image = np.stack([s[0] for s in samples])
        hse = np.stack([s[1] for s in samples])
        lcz = np.stack([s[2] for s in samples])
        nodata = np.stack([s[3] for s in samples])
        apply_image_nodata(image, hse, lcz, nodata, fill=False)  # Scene.read filled the image already
        return image, hse, lcz

    def _redraw_if_unusable(self, sample: tuple[np.ndarray, ...], rng: np.random.Generator
                            ) -> tuple[np.ndarray, ...]:
        """The sample, or a redrawn one when it is mostly image nodata or has no reference at all.

        After MAX_DRAWS attempts the best one seen is kept, so an epoch always has len(self) samples.
        """
        best, best_score = sample, self._usability(sample)
        draws = 1
        while best_score[0] < 1 and draws < MAX_DRAWS:
            candidate = self._read_window(*self._draw(rng, 1)[0])
            score = self._usability(candidate)
            if score > best_score:
                best, best_score = candidate, score
            draws += 1
        return best

    def _usability(self, sample: tuple[np.ndarray, ...]) -> tuple[int, float]:
        """(1 if usable else 0, share of valid pixels with a reference): usable = at most half nodata and
        some reference on a valid pixel."""
        _, hse, lcz, nodata = sample
        valid = ~nodata
        with_ref = np.zeros(nodata.shape, dtype=bool)
        if self.has_lcz:
            with_ref |= lcz.sum(axis=-1) > 0
        if self.has_hse:
            with_ref |= np.repeat(np.repeat(np.isfinite(hse[..., 0]), 2, axis=0), 2, axis=1)
        share = float((with_ref & valid).mean())
        usable = nodata.mean() <= MAX_NODATA_SHARE and share > 0
        return int(usable), share

    def _read_window(self, row: int, col: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One window at (row, col): image (P,P,10), hse (P/2,P/2,1), lcz (P,P,17), image nodata (P,P)."""
        p = self.patch_size
        image, valid = self._image().read(row, col, p, p)
        nodata = ~valid
        window_transform = self.transform * Affine.translation(col, row)
        if self._hse_ref is not None:
            # The 20 m grid of the window: same origin, pixels twice the size.
            hse = self._hse_ref.warp(window_transform * Affine.scale(2), p // 2, p // 2)[0]
        else:
            hse = np.full((p // 2, p // 2), np.nan, dtype=np.float32)
        if self._lcz_ref is not None:
            values = self._lcz_ref.warp(window_transform, p, p)
            if self.spec.lcz_kind == "codes":
                lcz = codes_to_onehot(np.nan_to_num(np.rint(values[0]), nan=0.0).astype(np.int64))
            else:
                lcz = renormalize_rows(np.nan_to_num(values.transpose(1, 2, 0), nan=0.0))
        elif self._lcz_polygons is not None:
            lcz = codes_to_onehot(self._lcz_polygons.codes(window_transform, p, p))
        else:
            lcz = np.zeros((p, p, NUM_CLASSES), dtype=np.float32)
        return (np.ascontiguousarray(image, dtype=np.float32), hse[..., None].astype(np.float32), lcz, nodata)

    # --- splitting and description ---

    def split(self, val_fraction: float, seed: int) -> tuple["SceneDataset", "SceneDataset"]:
        """(train, val) by area: whole blocks of 2 x patch_size px, a seeded random round(fraction x n) of
        them to validation. Training windows stay inside training blocks; validation tiles its blocks."""
        block = 2 * self.patch_size
        n_val = check_val_fraction(
            val_fraction, len(self.blocks), f"block(s) of {block} x {block} px (2 x patch_size)",
            f"The scene {self.spec.source}", hint="or a smaller patch_size")
        order = np.random.default_rng(seed).permutation(len(self.blocks))
        val_ids = set(int(i) for i in order[:n_val])
        train = [b for i, b in enumerate(self.blocks) if i not in val_ids]
        val = [b for i, b in enumerate(self.blocks) if i in val_ids]
        info = {"by": "area", "block_size": block, "val_fraction": float(val_fraction), "seed": int(seed)}
        return self._derive(train, "train", info), self._derive(val, "val", info)

    def _derive(self, blocks: list[Block], subset: str, info: dict[str, Any]) -> "SceneDataset":
        part = copy.copy(self)
        part._lock = threading.Lock()
        part._stack, part._scene = None, None
        part.spec = replace(self.spec)
        part.blocks = list(blocks)
        part._centres = None
        part.subset = subset if self.subset is None else f"{self.subset}/{subset}"
        part.split_info = info
        part._open_references(check=False)
        return part

    def describe(self) -> dict[str, Any]:
        spec = self.spec
        scene = self._image()
        references: dict[str, Any] = {}
        if spec.hse is not None:
            references["hse"] = {"path": str(spec.hse), "scale": spec.hse_scale, "band": spec.hse_band,
                                 "nodata": sorted(set(spec.hse_nodata)), "resampling": "average, 20 m"}
        if spec.lcz is not None:
            references["lcz"] = {"path": str(spec.lcz), "kind": spec.lcz_kind,
                                 "resampling": ("nearest" if spec.lcz_kind == "codes" else spec.lcz_resampling)
                                 + ", 10 m"}
        if spec.lcz_polygons is not None:
            references["lcz"] = {"polygons": str(spec.lcz_polygons), "attribute": spec.lcz_attribute,
                                 "layer": self._lcz_polygons.layer if self._lcz_polygons else spec.lcz_layer,
                                 "resampling": "rasterised at 10 m (pixel centres)"}
        res_x, res_y = abs(self.transform.a), abs(self.transform.e)
        return {
            "name": self.name,
            "format": self.format,
            "path": self.path,
            "image": str(spec.image),
            "patch_size": self.patch_size,
            "tasks": self.tasks(),
            "unit": "block",
            "block_size": 2 * self.patch_size,
            "blocks": len(self.blocks),
            "image_size_px": [int(self.height), int(self.width)],
            "crs": self.crs.to_string() if self.crs else None,
            "area_km2": round(self.area_px() * res_x * res_y / 1e6, 4),
            "tiles": self.num_eval_samples(),
            "samples_per_epoch": len(self),
            "bands": {"model_bands": list(MODEL_BANDS), "band_indices": [int(i) - 1 for i in scene.indexes],
                      "bands": spec.bands, "layout": spec.layout,
                      "scaling": f"(DN + {_offsets_text(scene.offsets)}) / {scene.scale:g}",
                      "reader": self.reader_notes},
            "references": references,
            "subset": self.subset,
            "split": self.split_info,
        }


def _offsets_text(offsets: np.ndarray) -> str:
    return f"{offsets[0]:g}" if np.all(offsets == offsets[0]) else "[" + ", ".join(f"{v:g}" for v in offsets) + "]"
