"""LCZ training areas drawn by a user: read (any OGR format and CRS), checked against the image, split into
train and test polygons WHOLE (stratified by class, seeded), and written back in the image CRS.

Class values accepted in the attribute: numbers 1..17 and 101..107 (WUDAPT / LCZ Generator / UMEP codes for
A..G), text "1".."17", "101".."107", "A".."G" in any case, optionally prefixed by "LCZ" (core.data.reference_polygons.
parse_lcz_value). Codes in memory and in every file written here are 1..17 (A..G = 11..17).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from rasterio.crs import CRS
from rasterio.features import bounds as geometry_bounds
from rasterio.warp import transform_geom

from ..common.errors import UrbanMTLError
from ..common.lcz import NUM_CLASSES, label
from ..data.reference_polygons import as_mapping, enable_kml, parse_lcz_value

Bounds = tuple[float, float, float, float]

#: The attribute holding the class (1..17) in the polygon files written here.
CODE_FIELD = "lcz"
#: Default share of each class's polygons held out for testing.
TEST_SHARE = 0.3


@dataclass
class TrainingArea:
    """One training polygon: `code` 1..17, `geometry` (GeoJSON-like) in the image CRS, `ref` how the user
    finds it again (layer and feature id)."""

    code: int
    geometry: dict[str, Any]
    bounds: Bounds
    ref: str
    index: int
    folder: str = ""          # the KML folder it came from (WUDAPT files: one folder per class), else ""


def _open_layers(path: Path, layer: Optional[str]) -> list[str]:
    import fiona

    if not path.exists():
        raise UrbanMTLError(f"The polygon file '{path}' does not exist. Give the path of your training areas "
                            f"(GeoPackage, shapefile, GeoJSON or KML).")
    enable_kml()
    try:
        layers = fiona.listlayers(str(path))
    except Exception as exc:  # fiona raises several types for unreadable files
        raise UrbanMTLError(f"Cannot read the polygon file '{path}' ({str(exc).splitlines()[0][:160]}). Give a "
                            f"GeoPackage, shapefile, GeoJSON or KML file of polygons.") from None
    if layer is not None and layer not in layers:
        raise UrbanMTLError(f"The polygon file '{path}' has no layer '{layer}'. Its layers: {', '.join(layers)}. "
                            f"Pass one of them.")
    return [layer] if layer is not None else list(layers)


def _parse(value: Any) -> Optional[int]:
    """LCZ code 1..17 of an attribute value, or None for anything that is not a class (empty and 0 included)."""
    try:
        return parse_lcz_value(value)
    except ValueError:
        return None


#: A KML folder named for its class, the way WUDAPT users write them: "2", "LCZ 2", "2 Compact midrise", "A", "LCZ A",
#: "11", "A Dense trees", "LCZ_2" (the class, then nothing or a space or punctuation).
FOLDER_RE = re.compile(r"^\s*(?:LCZ[\s_-]*)?([0-9]{1,3}|[A-G])(?![0-9A-Z])", re.IGNORECASE)


def folder_class(name: str) -> Optional[int]:
    """The LCZ code (1..17) a folder's name gives, or None when it names no class."""
    match = FOLDER_RE.match(name or "")
    return _parse(match.group(1)) if match else None


def _flat(geometry: dict[str, Any]) -> dict[str, Any]:
    """A (Multi)Polygon with 2-D coordinates (KML files often carry a third, the altitude)."""
    def ring(points):
        return [tuple(p[:2]) for p in points]

    if geometry["type"] == "Polygon":
        return {"type": "Polygon", "coordinates": [ring(r) for r in geometry["coordinates"]]}
    return {"type": "MultiPolygon", "coordinates": [[ring(r) for r in poly] for poly in geometry["coordinates"]]}


def _crs_of(src: Any, path: Path, name: str) -> CRS:
    if not src.crs_wkt:
        raise UrbanMTLError(f"The polygon file '{path}' (layer '{name}') has no coordinate reference "
                            f"system. Save it with one (e.g. in QGIS: Export > Save Features As, with a CRS).")
    return CRS.from_wkt(src.crs_wkt)


def read_training_areas(path: str | Path, field: Optional[str], dst_crs: Any, layer: Optional[str] = None,
                        log: Any = None) -> list[TrainingArea]:
    """Every polygon of `path` (every layer holding `field`, or `layer`) with its class, in `dst_crs`. Without a
    field (None or ""), the WUDAPT/LCZ Generator way: every layer is a KML folder named for its class
    (read_folders).

    Raises UrbanMTLError when the file cannot be read, no layer has `field` (the fields are listed), a value
    is not an LCZ class (a few are listed), a feature is not a polygon, or there is no polygon at all.
    """
    import fiona

    path = Path(path)
    dst_crs = CRS.from_user_input(dst_crs)
    if not field:
        return read_folders(path, dst_crs, layer, log or (lambda text: None))
    areas: list[TrainingArea] = []
    bad_values: list[Any] = []
    not_polygons: list[str] = []
    fields_seen: list[str] = []
    used_layers = []
    layers = _open_layers(path, layer)
    for name in layers:
        with fiona.open(str(path), layer=name) as src:
            fields = list(src.schema["properties"])
            if field not in fields:
                fields_seen.extend(f for f in fields if f not in fields_seen)
                continue
            used_layers.append(name)
            src_crs = _crs_of(src, path, name)
            for feature in src:
                ref = f"feature {feature.id}" + (f" of layer '{name}'" if len(layers) > 1 else "")
                geometry = feature["geometry"]
                gtype = None if geometry is None else geometry["type"]
                if gtype not in ("Polygon", "MultiPolygon"):
                    not_polygons.append(f"{ref} ({gtype or 'no geometry'})")
                    continue
                value = feature["properties"][field]
                code = _parse(value)
                if code is None:
                    bad_values.append(value)
                    continue
                geom = transform_geom(src_crs, dst_crs, _flat(as_mapping(geometry)))
                areas.append(TrainingArea(code, geom, tuple(geometry_bounds(geom)), ref, len(areas)))
    if not used_layers:
        raise UrbanMTLError(f"The polygon file '{path}' has no field '{field}'. Its fields: "
                            f"{', '.join(fields_seen) or 'none'}. Choose the one holding the LCZ class, or leave the "
                            f"field empty for a KML/KMZ with one folder per class (the WUDAPT way).")
    if bad_values:
        shown = ", ".join(repr(v) for v in list(dict.fromkeys(bad_values))[:6])
        raise UrbanMTLError(f"{len(bad_values)} polygon(s) in '{path}' have a value in field '{field}' that is not "
                            f"an LCZ class: {shown}. Use 1-17, 1-10 and A-G, or the WUDAPT codes 101-107 for A-G.")
    if not_polygons:
        raise UrbanMTLError(f"{len(not_polygons)} feature(s) of '{path}' are not polygons: "
                            f"{'; '.join(not_polygons[:4])}. Keep only polygons (draw training areas as polygons).")
    if not areas:
        raise UrbanMTLError(f"The polygon file '{path}' holds no polygons. Draw LCZ training areas (polygons "
                            f"with the class in field '{field}') and save them.")
    return areas


def read_folders(path: Path, dst_crs: CRS, layer: Optional[str], log: Any) -> list[TrainingArea]:
    """The training areas of a WUDAPT-style KML/KMZ: one folder (a GDAL layer) per class, named for it
    (folder_class), no attribute. Points and lines are left out, and the log says how many; a folder whose name names
    no class, or that holds no polygon, is an error naming it."""
    import fiona

    areas: list[TrainingArea] = []
    left_out: Counter = Counter()
    for name in _open_layers(path, layer):
        code = folder_class(name)
        if code is None:
            raise UrbanMTLError(f"The folder '{name}' of '{path}' names no LCZ class. Name each folder for its class "
                                f"(e.g. '2', 'LCZ 2', '2 Compact midrise', 'A', 'LCZ A Dense trees' or 11-17), or give "
                                f"the field that holds the class.")
        before = len(areas)
        with fiona.open(str(path), layer=name) as src:
            src_crs = _crs_of(src, path, name)
            for feature in src:
                geometry = feature["geometry"]
                gtype = None if geometry is None else geometry["type"]
                if gtype not in ("Polygon", "MultiPolygon"):
                    left_out[gtype or "no geometry"] += 1
                    continue
                geom = transform_geom(src_crs, dst_crs, _flat(as_mapping(geometry)))
                ref = f"feature {feature.id} of folder '{name}'"
                areas.append(TrainingArea(code, geom, tuple(geometry_bounds(geom)), ref, len(areas), folder=name))
        if len(areas) == before:
            raise UrbanMTLError(f"The folder '{name}' of '{path}' holds no polygon. Draw its training areas as "
                                f"polygons, or delete the folder.")
    if left_out:
        kinds = ", ".join(f"{n} {kind.lower()}{'s' if n > 1 else ''}" for kind, n in sorted(left_out.items()))
        log(f"Left out {sum(left_out.values())} feature(s) of '{path.name}' that are not polygons ({kinds}): "
            f"training areas are polygons.")
    return areas


def class_names(areas: Sequence[TrainingArea]) -> dict[str, str]:
    """{class letter or number as the report writes it: the folder(s) it came from}, for folder-mode files."""
    from ..common.lcz import LETTERS

    names: dict[str, list[str]] = {}
    for a in areas:
        if a.folder:
            names.setdefault(LETTERS[a.code - 1], [])
            if a.folder not in names[LETTERS[a.code - 1]]:
                names[LETTERS[a.code - 1]].append(a.folder)
    return {k: " / ".join(v) for k, v in sorted(names.items(), key=lambda kv: LETTERS.index(kv[0]))}


def check_inside(areas: Sequence[TrainingArea], image_bounds: Bounds, crs_label: str) -> None:
    """Raise UrbanMTLError when a polygon lies outside the image (its bounds do not overlap the image's)."""
    left, bottom, right, top = image_bounds
    outside = [a for a in areas
               if not (a.bounds[0] < right and a.bounds[2] > left and a.bounds[1] < top and a.bounds[3] > bottom)]
    if outside:
        what = "All" if len(outside) == len(areas) else f"{len(outside)} of the {len(areas)}"
        raise UrbanMTLError(
            f"{what} polygons lie outside the Sentinel-2 image (e.g. {', '.join(a.ref for a in outside[:3])}; image "
            f"bounds {tuple(round(v) for v in image_bounds)} in {crs_label}). Remove them or use an image that "
            f"covers them.")


def split_areas(areas: Sequence[TrainingArea], test_share: float = TEST_SHARE, seed: int = 0
                ) -> tuple[list[TrainingArea], list[TrainingArea]]:
    """(train, test): whole polygons, stratified by class. A class of n >= 2 polygons sends
    min(n - 1, max(1, round(test_share * n))) of them, drawn with `seed`, to test and the rest to train, so
    each side has at least one polygon of every class. A class with one polygon is an error."""
    if not 0 < test_share < 1:
        raise UrbanMTLError(f"The test share must lie between 0 and 1 (e.g. 0.3 = 30 % of each class's polygons "
                            f"held out); got {test_share}.")
    counts = Counter(a.code for a in areas)
    single = sorted(code for code, n in counts.items() if n < 2)
    if single:
        names = ", ".join(label(c) for c in single)
        raise UrbanMTLError(
            f"Class(es) {names} have only one polygon, which cannot be both trained on and tested. Draw at least "
            f"two polygons of every class (or remove the single ones).")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for code in sorted(counts):
        members = [a for a in areas if a.code == code]
        n_test = min(len(members) - 1, max(1, int(round(test_share * len(members)))))
        order = rng.permutation(len(members))
        held = set(int(i) for i in order[:n_test])
        for i, area in enumerate(members):
            (test if i in held else train).append(area)
    return sorted(train, key=lambda a: a.index), sorted(test, key=lambda a: a.index)


def write_areas(areas: Sequence[TrainingArea], path: str | Path, crs: Any) -> Path:
    """Write polygons as a GeoPackage in `crs` (the image CRS): field `lcz` (codes 1..17), `label` (e.g.
    "G Water") and `source` (layer and feature in the user's file)."""
    import fiona

    path = Path(path)
    if path.exists():
        path.unlink()
    schema = {"geometry": "MultiPolygon", "properties": {CODE_FIELD: "int", "label": "str", "source": "str"}}
    # No spatial index: once TensorFlow is loaded, GDAL may get TensorFlow's SQLite, which lacks the rtree
    # module GeoPackage indexes need (the write would log an error); a few hundred polygons need no index.
    with fiona.open(str(path), "w", driver="GPKG", crs_wkt=CRS.from_user_input(crs).to_wkt(),
                    schema=schema, SPATIAL_INDEX="NO") as dst:
        for a in areas:
            geometry = a.geometry
            if geometry["type"] == "Polygon":
                geometry = {"type": "MultiPolygon", "coordinates": [geometry["coordinates"]]}
            dst.write({"geometry": geometry,
                       "properties": {CODE_FIELD: int(a.code), "label": label(a.code), "source": a.ref}})
    return path


def pixel_counts(areas: Sequence[TrainingArea], transform: Any, height: int, width: int) -> np.ndarray:
    """Pixels (of the grid `transform`, height x width) whose centre lies inside a polygon, per class:
    (NUM_CLASSES + 1,) int64, slot k = LCZ k. Each polygon is burnt over its own bounding window."""
    from rasterio.features import rasterize
    from rasterio.windows import Window, from_bounds
    from rasterio.windows import transform as window_transform

    counts = np.zeros(NUM_CLASSES + 1, dtype=np.int64)
    for a in areas:
        win = from_bounds(*a.bounds, transform=transform).round_offsets().round_lengths()
        row0, col0 = max(int(win.row_off) - 1, 0), max(int(win.col_off) - 1, 0)
        row1 = min(int(win.row_off + win.height) + 2, height)
        col1 = min(int(win.col_off + win.width) + 2, width)
        if row1 <= row0 or col1 <= col0:
            continue
        sub = window_transform(Window(col0, row0, col1 - col0, row1 - row0), transform)
        burnt = rasterize([(a.geometry, 1)], out_shape=(row1 - row0, col1 - col0), transform=sub, fill=0,
                          dtype="uint8")
        counts[a.code] += int(burnt.sum())
    return counts


def class_table(areas: Sequence[TrainingArea]) -> dict[int, int]:
    """{code: number of polygons}."""
    return dict(sorted(Counter(a.code for a in areas).items()))
