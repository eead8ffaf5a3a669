"""Exports of a written LCZ map (GeoTIFF, codes 1..17, 0 = nodata) for urban climate models.

- UMEP (the LCZ Converter of its pre-processor, and SUEWS inputs from it): the same grid and CRS, codes 1..10 for
  the built types and 101..107 for A..G ("In UMEP we refer to the rural LCZ's as 101 ... 107"), uint8, nodata 0,
  with a colour table and the class names.
- w2w (WUDAPT-to-WRF, `w2w INPUT_DIR LCZ.tif geo_em.dXX.nc`): w2w reads the FIRST band (the second only when the
  band's long_name holds 'lczFilter', as in LCZ Generator files), expects codes 1..17 (101..107 are renamed, but
  a nodata 0 among them is not) in WGS84 lon/lat (EPSG:4326; other CRSs are reprojected by w2w itself), and an
  extent slightly larger than the WRF domain. The copy written here is one band, uint8, codes 1..17, nodata 0,
  EPSG:4326, reprojected with nearest neighbour at about the map's own resolution (100 m in degrees).
- Majority filter (off by default): the post-classification smoothing of the LCZ Generator done as a 3x3 or 5x5
  mode filter of the 100 m map; nodata cells stay nodata and never vote; on a tie the cell keeps its class when
  it is among the most frequent, else the lowest code wins.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..common.atomic import atomic_write
from ..common.errors import UrbanMTLError
from ..common.lcz import CODES, COLORS, NUM_CLASSES, UMEP_CODES, hex_to_rgb, label, to_umep_codes, umep_label
from ..common.spec import LCZ_NODATA, MAJORITY_SIZES


def majority_filter(codes: np.ndarray, size: int = 3, nodata: int = LCZ_NODATA) -> np.ndarray:
    """Mode filter of an LCZ code map (h, w) over size x size windows (see the module docstring)."""
    if size not in (3, 5):
        raise UrbanMTLError(f"The majority filter size must be 3 or 5 (cells a side); got {size}.")
    codes = np.asarray(codes)
    h, w = codes.shape
    r = size // 2
    padded = np.pad(codes.astype(np.int64), r, constant_values=nodata)
    counts = np.zeros((NUM_CLASSES + 1, h, w), dtype=np.int16)
    for dr in range(size):
        for dc in range(size):
            window = padded[dr:dr + h, dc:dc + w]
            for k in range(1, NUM_CLASSES + 1):
                counts[k] += window == k
    counts[0] = 0
    best = counts.argmax(axis=0)
    centre = np.clip(codes.astype(np.int64), 0, NUM_CLASSES)
    keep = np.take_along_axis(counts, centre[None], axis=0)[0] == counts.max(axis=0)
    out = np.where(keep, centre, best).astype(codes.dtype)
    out[codes == nodata] = nodata
    return out


def _read_lcz(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import rasterio

    if not path.exists():
        raise UrbanMTLError(f"The LCZ map '{path}' does not exist. Map the scene first.")
    with rasterio.open(path) as ds:
        codes = ds.read(1)
        profile = ds.profile.copy()
        tags = ds.tags()
    bad = codes[(codes != LCZ_NODATA) & ((codes < 1) | (codes > NUM_CLASSES))]
    if bad.size:
        raise UrbanMTLError(f"The LCZ map '{path}' holds the value {int(bad[0])}, not an LCZ code 1..{NUM_CLASSES}; "
                            f"give an LCZ map written by urbanmtl.")
    profile["tags"] = tags
    return codes, profile


def _write(path: Path, codes: np.ndarray, crs: Any, transform: Any, colors: dict[int, str],
           names: dict[int, str], description: str, tags: Optional[dict[str, str]] = None) -> Path:
    """Write a one-band uint8 class raster through a temporary sibling, then rename it into place."""
    import rasterio

    from .writer import write_category_names

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=codes.shape[1], height=codes.shape[0], count=1, dtype="uint8", crs=crs,
                   transform=transform, nodata=LCZ_NODATA, compress="deflate", tiled=codes.shape[1] >= 256
                   and codes.shape[0] >= 256)
    try:
        with atomic_write(path, tmp=path.with_name(f".{path.stem}.tmp{path.suffix}"), sidecars=(".aux.xml",)) as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(codes.astype(np.uint8), 1)
                dst.set_band_description(1, description)
                dst.write_colormap(1, {LCZ_NODATA: (0, 0, 0, 0),
                                       **{v: hex_to_rgb(c) + (255,) for v, c in colors.items()}})
                if tags:
                    dst.update_tags(**tags)
            legend = {LCZ_NODATA: "No data", **names}      # GDAL category names of the values 0..max
            write_category_names(tmp, [legend.get(v, "") for v in range(max(legend) + 1)])
    except OSError as exc:
        raise UrbanMTLError(f"Cannot write '{path}' ({exc.strerror or exc}). Choose a writable folder with free "
                            f"space.") from None
    return path


def _lcz_legend() -> tuple[dict[int, str], dict[int, str]]:
    return dict(zip(CODES, COLORS)), {code: label(code) for code in CODES}


def write_umep(codes: np.ndarray, crs: Any, transform: Any, path: Path) -> Path:
    """The map in UMEP's codes (1..10, 101..107), same grid and CRS."""
    colors = dict(zip(UMEP_CODES, COLORS))
    names = {code: umep_label(code) for code in UMEP_CODES}
    return _write(path, to_umep_codes(codes), crs, transform, colors, names,
                  "LCZ, UMEP codes (1..10, 101..107 = A..G; 0 = no data)")


def write_w2w(codes: np.ndarray, crs: Any, transform: Any, path: Path) -> Path:
    """A w2w-ready copy: EPSG:4326, nearest neighbour, codes 1..17, nodata 0, one uint8 band."""
    from rasterio.enums import Resampling
    from rasterio.transform import array_bounds
    from rasterio.warp import calculate_default_transform, reproject

    h, w = codes.shape
    dst_transform, dst_w, dst_h = calculate_default_transform(crs, "EPSG:4326", w, h,
                                                              *array_bounds(h, w, transform))
    out = np.zeros((dst_h, dst_w), dtype=np.uint8)
    reproject(codes.astype(np.uint8), out, src_transform=transform, src_crs=crs, src_nodata=LCZ_NODATA,
              dst_transform=dst_transform, dst_crs="EPSG:4326", dst_nodata=LCZ_NODATA,
              resampling=Resampling.nearest)
    colors, names = _lcz_legend()
    return _write(path, out, "EPSG:4326", dst_transform, colors, names,
                  "LCZ (1..17 = LCZ 1..10, A..G; 0 = no data)")


def _filter_in_place(path: Path, codes: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Majority-filter the map file itself: the filtered codes are written into a copy of it (colour table, tags,
    the legend sidecar and the overviews kept; a COG stays a valid tiled GeoTIFF, its block order may change),
    which then replaces it."""
    import rasterio

    filtered = majority_filter(codes, size)
    changed = int(np.count_nonzero(filtered != codes))
    try:
        with atomic_write(path, tmp=path.with_name(f".{path.stem}.majority.tmp{path.suffix}")) as tmp:
            shutil.copyfile(path, tmp)
            with rasterio.open(tmp, "r+") as ds:
                ds.write(filtered, 1)
                ds.update_tags(URBANMTL_MAJORITY_FILTER=f"{size}x{size}")
                factors = ds.overviews(1)
                if factors:   # a COG: its overviews must show the filtered map too
                    from rasterio.enums import Resampling

                    ds.build_overviews(factors, Resampling.mode)
    except OSError as exc:
        raise UrbanMTLError(f"Cannot rewrite the LCZ map '{path}' with the majority filter "
                            f"({exc.strerror or exc}). Check the folder is writable and has free space.") from None
    return filtered, changed


def check_exports(lcz_path: str | os.PathLike, umep_path: Optional[str | os.PathLike] = None,
                  w2w_path: Optional[str | os.PathLike] = None, majority: int = 0, overwrite: bool = False) -> None:
    """The checks of export_lcz that need no map, for a caller to make before mapping: the filter size, export
    names apart from the map and each other, GeoTIFF names, and no existing file replaced without `overwrite`."""
    if majority not in MAJORITY_SIZES:
        raise UrbanMTLError(f"The majority filter size must be 0 (off), 3 or 5; got {majority}.")
    lcz = Path(lcz_path).resolve()
    targets = [Path(p) for p in (umep_path, w2w_path) if p is not None]
    for target in targets:
        if target.resolve() == lcz:
            raise UrbanMTLError(f"The export '{target}' would replace the LCZ map itself. Choose another file name.")
        if target.suffix.lower() not in (".tif", ".tiff"):
            raise UrbanMTLError(f"The export '{target}' must be a GeoTIFF; give it a .tif name.")
        if target.exists() and not overwrite:
            raise UrbanMTLError(f"The export '{target}' exists already. Choose another name or allow overwriting.")
    if len(targets) == 2 and targets[0].resolve() == targets[1].resolve():
        raise UrbanMTLError(f"The UMEP and w2w exports have the same name '{targets[0]}'. Give them different names.")


def export_lcz(lcz_path: str | os.PathLike, umep_path: Optional[str | os.PathLike] = None,
               w2w_path: Optional[str | os.PathLike] = None, majority: int = 0,
               overwrite: bool = True) -> dict[str, Any]:
    """Post-process a written LCZ GeoTIFF: optionally majority-filter it in place (majority = 3 or 5; 0 = off),
    then write the UMEP and/or w2w copies (see the module docstring); existing export files are replaced only
    with `overwrite`. Returns what was done:
    {"lcz": path, "majority": size, "changed_cells": n, "umep": path or None, "w2w": path or None}."""
    check_exports(lcz_path, umep_path, w2w_path, majority, overwrite)
    path = Path(lcz_path)
    codes, profile = _read_lcz(path)
    changed = 0
    if majority:
        codes, changed = _filter_in_place(path, codes, majority)
    result: dict[str, Any] = {"lcz": str(path), "majority": majority, "changed_cells": changed,
                              "umep": None, "w2w": None}
    if umep_path is not None:
        result["umep"] = str(write_umep(codes, profile["crs"], profile["transform"], Path(umep_path)))
    if w2w_path is not None:
        result["w2w"] = str(write_w2w(codes, profile["crs"], profile["transform"], Path(w2w_path)))
    return result
