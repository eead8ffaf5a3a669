"""Tiny fake datasets in every supported format, written on demand by tests (no download needed).

Every function writes into the folder or file it is given and returns the path to pass to
`core.data.open_datasets`. The planted contents are documented per function so tests can assert that a
reader puts a known value where it belongs, and that a network learns a known rule.
tests/data/README.md summarises them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import h5py
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import from_bounds
from rasterio.warp import reproject, transform, transform_bounds

#: Model band order and positions used by the planted signals (indices into the 10 MODEL_BANDS).
B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12 = range(10)
#: LCZ codes planted by make_authors_h5: built square, low-plants background, water background.
BUILT_CODE, PLANTS_CODE, WATER_CODE = 2, 14, 17
#: Upper-left corner and CRS of every fake scene (the shared T33UUU scene's corner, UTM 33N), 10 m pixels.
SCENE_ORIGIN = (330000.0, 5822040.0)
SCENE_CRS = "EPSG:32633"
#: HSE percent inside the built square of make_scene.
SCENE_HSE_PERCENT = 80
#: EuroSAT MS file band order (B8A last) and its class names (shared/data/README.md).
EUROSAT_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "B8A")
EUROSAT_CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")
L1C_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


def _onehot(codes: np.ndarray) -> np.ndarray:
    out = np.zeros(codes.shape + (17,), dtype=np.float32)
    valid = codes > 0
    out[np.nonzero(valid) + (codes[valid] - 1,)] = 1.0
    return out


def make_authors_h5(
    path: str | Path,
    n: int = 16,
    size: int = 32,
    signal: bool = True,
    seed: int = 0,
    *,
    with_hse: bool = True,
    with_lcz: bool = True,
    hse_full_res: bool = False,
    nodata: bool = False,
    bands: int = 10,
) -> Path:
    """An authors-format HDF5: x (n,size,size,bands) float32 reflectance, y_0 HSE percent, y_1 one-hot LCZ.

    Planted rule (signal=True), which a network can learn:
    - Background of patch i: low plants (LCZ D = 14) if i is even, water (LCZ G = 17) if odd. All bands are
      0.08 +- 0.01 noise; B8 and B8A are 0.35 over low plants and 0.02 over water (B11, B12 0.01 over water).
    - A built square of side size//2 at a random even (row, col) in every patch: B2, B3, B4, B11, B12 = 0.30,
      B8, B8A = 0.20 (+- 0.01 noise); inside it LCZ = 2 (compact midrise) and HSE = 100 %, elsewhere HSE = 0 %.
      The square is on the 20 m grid, so each 20 m HSE pixel is wholly in or out of it.
    So: HSE high <=> B2..B4 bright; LCZ 2 where bright, else 14 where B8 > 0.2, else 17.
    signal=False: the same images, but labels from an independently drawn square and background (nothing to
    learn).

    y_0 is (n, size/2, size/2, 1) percent, or (n, size, size, 1) with hse_full_res. nodata=True plants, for
    n >= 3: patch 0 has image rows 0..3 all zero (image nodata); patch 1 has y_0 = 255 in its first 20 m row
    (HRL nodata); patch 2 has an all-zero y_1 in rows 0..1 (no LCZ reference). `bands` != 10 writes a wrong
    band count (for error tests). with_hse / with_lcz = False leave y_0 / y_1 out.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    half = size // 2
    x = np.empty((n, size, size, bands), dtype=np.float32)
    hse = np.zeros((n, size // 2, size // 2), dtype=np.float32)
    codes = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        r, c = (2 * int(v) for v in rng.integers(0, (size - half) // 2 + 1, size=2))
        water = i % 2 == 1
        img = 0.08 + rng.normal(0, 0.01, size=(size, size, 10)).astype(np.float32)
        img[..., [B8, B8A]] = 0.02 if water else 0.35
        if water:
            img[..., [B11, B12]] = 0.01
        img[r:r + half, c:c + half, :] = 0.08
        img[r:r + half, c:c + half, [B2, B3, B4, B11, B12]] = 0.30
        img[r:r + half, c:c + half, [B8, B8A]] = 0.20
        img[r:r + half, c:c + half] += rng.normal(0, 0.01, size=(half, half, 10)).astype(np.float32)
        if not signal:
            r, c = (2 * int(v) for v in rng.integers(0, (size - half) // 2 + 1, size=2))
            water = bool(rng.integers(0, 2))
        x[i] = img[..., :bands] if bands <= 10 else np.concatenate(
            [img, np.full((size, size, bands - 10), 0.05, np.float32)], axis=-1)
        codes[i] = WATER_CODE if water else PLANTS_CODE
        codes[i, r:r + half, c:c + half] = BUILT_CODE
        hse[i, r // 2:(r + half) // 2, c // 2:(c + half) // 2] = 100.0
    y1 = _onehot(codes)
    if hse_full_res:
        y0 = np.repeat(np.repeat(hse, 2, axis=1), 2, axis=2)[..., None]
    else:
        y0 = hse[..., None]
    if nodata and n >= 3:
        x[0, :4] = 0.0
        y0[1, : (2 if hse_full_res else 1)] = 255.0
        y1[2, :2] = 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=x, chunks=(1, size, size, bands))
        if with_hse:
            f.create_dataset("y_0", data=y0)
        if with_lcz:
            f.create_dataset("y_1", data=y1)
    return path


def make_so2sat_h5(path: str | Path, n: int = 16, seed: int = 0) -> Path:
    """A So2Sat LCZ42-style HDF5: sen1 (n,32,32,8) zeros, sen2 (n,32,32,10) float64, label (n,17) one-hot.

    Planted: patch i has LCZ code (i % 17) + 1; its sen2 band B2 (index 0) is code / 100 everywhere, the other
    bands 0.1 + small noise. So a reader must give lcz argmax + 1 == image[..., 0] * 100 at every pixel.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    codes = np.arange(n) % 17 + 1
    sen2 = 0.1 + rng.normal(0, 0.005, size=(n, 32, 32, 10))
    sen2[..., 0] = codes[:, None, None] / 100.0
    label = np.zeros((n, 17), dtype=np.float64)
    label[np.arange(n), codes - 1] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("sen1", data=np.zeros((n, 32, 32, 8)), chunks=(1, 32, 32, 8))
        f.create_dataset("sen2", data=sen2, chunks=(1, 32, 32, 10))
        f.create_dataset("label", data=label)
    return path


def make_eurosat_h5(path: str | Path, n: int = 10, size: int = 64, seed: int = 0,
                    band_names_attr: bool = True) -> Path:
    """A file in the shared EuroSAT teacher layout (x uint16 13 bands with B8A LAST, lcz_prob, hse, class).

    Planted: file band j holds DN 1000 + 100 j, except B8A (file band 12, the last) = 4242 and B12 (file band
    11) = 2121; so in model order B8A reads 0.4242 and B11 (file band 10) 0.2. Patch i has EuroSAT class
    i % 10 (class_names attribute = EUROSAT_CLASSES); lcz_prob is 255 for LCZ (i % 17) + 1 and 0 elsewhere
    except patch 0, whose row 0 pixels put 128 on LCZ 1 and 127 on LCZ 2 (soft: 0.502 / 0.498 after
    renormalising); hse (uint8 x 255, 10 m) is 255 in the left half of each patch and 0 in the right half.
    band_names_attr=False leaves out the band_names attribute (the reader must still use the EuroSAT order).
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    x = np.empty((n, size, size, 13), dtype=np.uint16)
    for j in range(13):
        x[..., j] = 1000 + 100 * j
    x[..., 12] = 4242
    x[..., 11] = 2121
    x = (x + rng.integers(0, 2, size=x.shape)).astype(np.uint16)
    lcz = np.zeros((n, size, size, 17), dtype=np.uint8)
    for i in range(n):
        lcz[i, ..., i % 17] = 255
    lcz[0, 0] = 0
    lcz[0, 0, :, 0], lcz[0, 0, :, 1] = 128, 127
    hse = np.zeros((n, size, size), dtype=np.uint8)
    hse[:, :, : size // 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("x", data=x, chunks=(1, size, size, 13))
        if band_names_attr:
            ds.attrs["band_names"] = np.array(EUROSAT_BANDS, dtype=object)
        f.create_dataset("lcz_prob", data=lcz, chunks=(1, size, size, 17))
        f.create_dataset("hse", data=hse, chunks=(1, size, size))
        cls = f.create_dataset("eurosat_class", data=(np.arange(n) % 10).astype(np.int8))
        cls.attrs["class_names"] = np.array(EUROSAT_CLASSES, dtype=object)
        f.attrs["class_names"] = np.array(EUROSAT_CLASSES, dtype=object)
    return path


def scene_transform(origin: tuple[float, float] = SCENE_ORIGIN, pixel: float = 10.0) -> Affine:
    """Geotransform of a fake scene: north-up, upper-left corner `origin`, `pixel` metres."""
    return Affine(pixel, 0.0, origin[0], 0.0, -pixel, origin[1])


def pixel_to_xy(row: float, col: float, origin: tuple[float, float] = SCENE_ORIGIN) -> tuple[float, float]:
    """Map coordinates (EPSG:32633) of image pixel position (row, col) of a fake scene (corners at integers)."""
    return scene_transform(origin) * (col, row)


def scene_hse_percent(size: int) -> np.ndarray:
    """The planted HSE of make_scene on the scene's 20 m grid, (size/2, size/2) uint8 percent or HRL nodata.

    80 % inside the built square (image rows/cols size//4 .. size//2 - 1), 0 % elsewhere; HRL nodata codes
    in the bottom quarter rows: 254 (unclassifiable) in its left quarter columns, 255 (outside area) in its right
    quarter columns.
    """
    h = size // 2
    hse = np.zeros((h, h), dtype=np.uint8)
    q = size // 8  # a quarter of the scene, in 20 m pixels
    hse[q:2 * q, q:2 * q] = SCENE_HSE_PERCENT
    hse[3 * q:, :q] = 254
    hse[3 * q:, 3 * q:] = 255
    return hse


def scene_lcz_cells(size: int) -> np.ndarray:
    """The planted LCZ codes of make_scene on its 100 m grid (ceil(size/10) cells a side, WUDAPT aliases).

    Cell (r, c) covers image pixels 10r..10r+9 x 10c..10c+9 and holds 0 (no reference) for r = c = 0;
    2 for 3 <= r, c <= 4; else 104 (= D, low plants) for r < cells // 2 and 107 (= G, water) below.
    """
    cells = -(-size // 10)
    codes = np.full((cells, cells), 104, dtype=np.uint8)
    codes[cells // 2:] = 107
    codes[3:5, 3:5] = 2
    codes[0, 0] = 0
    return codes


def write_raster(
    path: str | Path,
    data: np.ndarray,
    crs: Optional[Any] = SCENE_CRS,
    transform: Optional[Affine] = None,
    *,
    nodata: Optional[float] = None,
    dtype: Optional[Any] = None,
    descriptions: Optional[Sequence[str]] = None,
    tags: Optional[dict[str, Any]] = None,
    band_tags: Optional[dict[int, dict[str, Any]]] = None,
    compress: Optional[str] = None,
    tiled: bool = False,
    blocksize: Optional[int] = None,
) -> Path:
    """Write a (bands, rows, cols) array as a GeoTIFF; the one raster writer of the tests. Returns the path.

    crs: anything rasterio takes (default the fake scenes' EPSG:32633), or None for a file without a CRS.
    transform: default `scene_transform()` (10 m, upper-left corner SCENE_ORIGIN). dtype: default the array's.
    descriptions: band names (band 1 first). tags: dataset tags; band_tags: {band index: tags}. compress
    (e.g. "deflate"), tiled and blocksize (tile edge, with tiled) are GeoTIFF creation options, off by default.
    """
    count, height, width = data.shape
    profile: dict[str, Any] = dict(driver="GTiff", width=width, height=height, count=count,
                                   dtype=np.dtype(dtype or data.dtype).name,
                                   transform=scene_transform() if transform is None else transform, nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    if compress:
        profile["compress"] = compress
    if tiled:
        profile["tiled"] = True
        if blocksize:
            profile.update(blockxsize=blocksize, blockysize=blocksize)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data if dtype is None else data.astype(dtype))
        for i, d in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
        for i, btags in (band_tags or {}).items():
            dst.update_tags(i, **btags)
    return Path(path)


def _warp_to(data: np.ndarray, src_transform: Affine, dst_crs: str, resolution: Optional[float],
             nodata: float, resampling: Resampling = Resampling.nearest, scale: int = 1
             ) -> tuple[np.ndarray, Affine]:
    """Reproject a (bands, h, w) array from the fake scene CRS into dst_crs; returns (array, transform).

    The output covers the whole source footprint, with pixels of `resolution` (dst CRS units), or without it
    `scale` times as many pixels a side as the source.
    """
    bands, h, w = data.shape
    left, top = src_transform * (0, 0)
    right, bottom = src_transform * (w, h)
    l, b, r, t = transform_bounds(SCENE_CRS, dst_crs, left, bottom, right, top, densify_pts=51)
    if resolution:
        dst_w, dst_h = int(np.ceil((r - l) / resolution)), int(np.ceil((t - b) / resolution))
        dst_transform = Affine(resolution, 0.0, l, 0.0, -resolution, t)
    else:
        dst_w, dst_h = w * scale, h * scale
        dst_transform = from_bounds(l, b, r, t, dst_w, dst_h)
    out = np.full((bands, dst_h, dst_w), nodata, dtype=data.dtype)
    reproject(data, out, src_transform=src_transform, src_crs=SCENE_CRS, dst_transform=dst_transform,
              dst_crs=dst_crs, src_nodata=None, dst_nodata=nodata, resampling=resampling)
    return out, dst_transform


def make_scene(
    folder: str | Path,
    size: int = 96,
    *,
    hse: bool = True,
    hse_crs: str = "EPSG:3035",
    lcz: Optional[str] = "codes",
    lcz_crs: str = SCENE_CRS,
    origin: tuple[float, float] = SCENE_ORIGIN,
    offset: Optional[float] = None,
    nodata_cols: int = 0,
    band_names: bool = True,
    manifest: str = "yaml",
    name: str = "fake_scene",
    extra: Optional[dict[str, Any]] = None,
) -> Path:
    """A small georeferenced scene with references on other grids, and its manifest; returns the manifest path.

    Image `<name>_l1c.tif`: 13-band uint16 L1C stack (B1..B12 with B8A after B8; band descriptions set unless
    band_names=False), size x size px at 10 m, EPSG:32633, upper-left corner `origin`, nodata 0. DN: band j of
    the file = 1000 + 10 j everywhere, plus the planted signal of make_authors_h5 scaled by 10000 in model
    bands: rows >= size/2 are "water" (B8, B8A = 200 DN) and rows above "plants" (B8, B8A = 3500 DN); the
    built square (rows/cols size//4 .. size//2 - 1) has B2, B3, B4, B11, B12 = 3000 DN. The first `nodata_cols`
    columns are 0 in every band (image nodata).
    HSE `<name>_hse.tif` (hse=True): `scene_hse_percent(size)` (20 m, percent, 254/255 nodata) reprojected
    with nearest into `hse_crs` at 20 m (or the equivalent degrees), nodata 255.
    LCZ (lcz=...): "codes" -> `<name>_lcz.tif`, `scene_lcz_cells(size)` at 100 m in EPSG:32633 (same corner),
    nodata 0, or (lcz_crs other than EPSG:32633) those cells reprojected with nearest into lcz_crs at 10 m
    (or about 10 m in degrees); "probabilities" -> the same cells as a 17-band uint8 one-hot x 255 raster (aliases resolved);
    "polygons" -> `make_polygons(folder, origin=origin)` with lcz_attribute "lcz"; None -> no LCZ.
    `offset` is written as the manifest's offset when given; `extra` adds/overrides manifest keys verbatim.
    Manifest `<name>.yaml` (or .json with manifest="json") with relative paths.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tr = scene_transform(origin)
    dn = np.empty((13, size, size), dtype=np.uint16)
    for j in range(13):
        dn[j] = 1000 + 10 * j
    l1c = {b: i for i, b in enumerate(L1C_BANDS)}
    half, q = size // 2, size // 4
    dn[[l1c["B8"], l1c["B8A"]], :half] = 3500
    dn[[l1c["B8"], l1c["B8A"]], half:] = 200
    for b in ("B2", "B3", "B4", "B11", "B12"):
        dn[l1c[b], q:half, q:half] = 3000
    if nodata_cols:
        dn[:, :, :nodata_cols] = 0
    image = folder / f"{name}_l1c.tif"
    write_raster(image, dn, SCENE_CRS, tr, nodata=0, descriptions=L1C_BANDS if band_names else None)
    keys: dict[str, Any] = {"name": name, "image": image.name}
    if offset is not None:
        keys["offset"] = offset
    if hse:
        hse20 = scene_hse_percent(size)[None]
        warped, wtr = _warp_to(hse20, tr * Affine.scale(2), hse_crs,
                               20.0 if CRS.from_user_input(hse_crs).is_projected else None, nodata=255)
        path = folder / f"{name}_hse.tif"
        write_raster(path, warped, hse_crs, wtr, nodata=255)
        keys.update({"hse": path.name, "hse_nodata": [254, 255]})
    if lcz == "codes":
        path = folder / f"{name}_lcz.tif"
        cells, cells_tr = scene_lcz_cells(size)[None], scene_transform(origin, 100.0)
        if lcz_crs != SCENE_CRS:
            # Nearest at ~10 m keeps every 100 m cell's code; only its outline is re-stepped (by <= 1 pixel).
            cells, cells_tr = _warp_to(cells, cells_tr, lcz_crs,
                                       10.0 if CRS.from_user_input(lcz_crs).is_projected else None, nodata=0,
                                       scale=10)
        write_raster(path, cells, lcz_crs, cells_tr, nodata=0)
        keys["lcz"] = path.name
    elif lcz == "probabilities":
        cells = scene_lcz_cells(size).astype(np.int64)
        cells = np.where(cells > 100, cells - 90, cells)
        probs = (_onehot(cells) * 255).astype(np.uint8).transpose(2, 0, 1)
        path = folder / f"{name}_lcz_prob.tif"
        write_raster(path, probs, SCENE_CRS, scene_transform(origin, 100.0))
        keys.update({"lcz": path.name, "lcz_scale": "1/255"})
    elif lcz == "polygons":
        path = make_polygons(folder, origin=origin, name=f"{name}_polygons")
        keys.update({"lcz_polygons": path.name, "lcz_attribute": "lcz"})
    elif lcz is not None:
        raise ValueError(f"lcz must be 'codes', 'probabilities', 'polygons' or None, not {lcz!r}")
    keys.update(extra or {})
    return write_manifest(folder / f"{name}.{manifest}", keys)


def write_manifest(path: str | Path, keys: dict[str, Any]) -> Path:
    """Write a scene manifest (YAML for .yaml/.yml, JSON otherwise) with the given keys; returns its path."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(keys, sort_keys=False))
    else:
        path.write_text(json.dumps(keys, indent=2))
    return path


#: Polygons of make_polygons as (row0, col0, row1, col1) image-pixel boxes of a fake scene.
POLYGON_BOXES = ((8, 8, 24, 24), (56, 8, 80, 40))


def make_polygons(
    folder: str | Path,
    *,
    crs: str = "EPSG:4326",
    driver: str = "GeoJSON",
    attribute: str = "lcz",
    values: Sequence[Any] = ("2", "G"),
    boxes: Sequence[tuple[int, int, int, int]] = POLYGON_BOXES,
    origin: tuple[float, float] = SCENE_ORIGIN,
    name: str = "lcz_polygons",
) -> Path:
    """LCZ training-area polygons over a fake scene: one rectangle per box with attribute `attribute`.

    boxes: (row0, col0, row1, col1) in image pixels of a scene at `origin` (corners at integer pixel
    positions), converted to `crs` (default EPSG:4326, lon/lat). Default values "2" and "G" (= LCZ 17): box
    (8, 8)-(24, 24) -> LCZ 2, box (56, 8)-(80, 40) -> LCZ 17. The field type follows the values (str or int).
    driver "GeoJSON" writes `<name>.geojson`, "GPKG" `<name>.gpkg`, "KML" `<name>.kml` laid out like a WUDAPT
    training-area file: one Folder per polygon (a separate layer for GDAL's LIBKML driver), the value as the
    placemark name (attribute "Name"; `attribute` and `crs` are ignored, KML is lon/lat). Returns the file path.
    """
    import fiona

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = {"GeoJSON": ".geojson", "GPKG": ".gpkg", "KML": ".kml"}[driver]
    path = folder / f"{name}{suffix}"
    if path.exists():
        path.unlink()
    if driver == "KML":
        folders = []
        for i, ((r0, c0, r1, c1), value) in enumerate(zip(boxes, values)):
            corners = [(r0, c0), (r0, c1), (r1, c1), (r1, c0), (r0, c0)]
            xs, ys = zip(*(pixel_to_xy(r, c, origin) for r, c in corners))
            lon, lat = transform(SCENE_CRS, "EPSG:4326", list(xs), list(ys))
            ring = " ".join(f"{a:.9f},{b:.9f}" for a, b in zip(lon, lat))
            folders.append(
                f"<Folder><name>class_{i}</name><Placemark><name>{value}</name><Polygon><outerBoundaryIs>"
                f"<LinearRing><coordinates>{ring}</coordinates></LinearRing></outerBoundaryIs></Polygon>"
                f"</Placemark></Folder>")
        path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<kml xmlns="http://www.opengis.net/kml/2.2">'
                        f"<Document>{''.join(folders)}</Document></kml>\n")
        return path
    field_type = "str" if all(isinstance(v, str) for v in values) else "int"
    schema = {"geometry": "Polygon", "properties": {attribute: field_type}}
    with fiona.open(path, "w", driver=driver, crs_wkt=CRS.from_user_input(crs).to_wkt(), schema=schema) as dst:
        for (r0, c0, r1, c1), value in zip(boxes, values):
            corners = [(r0, c0), (r0, c1), (r1, c1), (r1, c0), (r0, c0)]
            xs, ys = zip(*(pixel_to_xy(r, c, origin) for r, c in corners))
            xs, ys = transform(SCENE_CRS, crs, list(xs), list(ys))
            dst.write({"geometry": {"type": "Polygon", "coordinates": [list(zip(xs, ys))]},
                       "properties": {attribute: value}})
    return path


def fake_safe(root: Path, jp2_dir: Path, baseline: str = "04.00", offset: int = -1000) -> Path:
    """A minimal SAFE-compact L1C product around the JP2 band files of T33UUU in jp2_dir (the shared sample scene,
    linked, not copied) that GDAL's SENTINEL2 driver opens: product MTD with granule file list, offsets and
    baseline; tile MTD with the grid."""
    safe = root / f"S2A_MSIL1C_20220301T101101_N{baseline.replace('.', '')}_R022_T33UUU_20220301T120000.SAFE"
    granule = "L1C_T33UUU_A000001_20220301T101101"
    img = safe / "GRANULE" / granule / "IMG_DATA"
    img.mkdir(parents=True)
    names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    for n in names:
        (img / f"T33UUU_20220301T101101_{n}.jp2").symlink_to(jp2_dir / f"T33UUU_20170216T102101_{n}.jp2")
    files = "\n".join(f"<IMAGE_FILE>GRANULE/{granule}/IMG_DATA/T33UUU_20220301T101101_{n}</IMAGE_FILE>"
                      for n in names)
    offsets = "\n".join(f'<RADIO_ADD_OFFSET band_id="{i}">{offset}</RADIO_ADD_OFFSET>' for i in range(13))
    (safe / "MTD_MSIL1C.xml").write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd">
<n1:General_Info><Product_Info>
<PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL><PRODUCT_TYPE>S2MSI1C</PRODUCT_TYPE>
<PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
<Query_Options completeSingleTile="true"><PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT></Query_Options>
<Product_Organisation><Granule_List><Granule granuleIdentifier="{granule}" imageFormat="JPEG2000">
{files}
</Granule></Granule_List></Product_Organisation></Product_Info>
<Product_Image_Characteristics>
<Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>
<Radiometric_Offset_List>{offsets}</Radiometric_Offset_List>
</Product_Image_Characteristics></n1:General_Info></n1:Level-1C_User_Product>
""")
    geo = "".join(f'<Size resolution="{r}"><NROWS>{768 * 10 // r}</NROWS><NCOLS>{1536 * 10 // r}</NCOLS></Size>'
                  for r in (10, 20, 60))
    geo += "".join(f'<Geoposition resolution="{r}"><ULX>330000</ULX><ULY>5822040</ULY><XDIM>{r}</XDIM>'
                   f'<YDIM>-{r}</YDIM></Geoposition>' for r in (10, 20, 60))
    (safe / "GRANULE" / granule / "MTD_TL.xml").write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-1C_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-1C_Tile_Metadata.xsd">
<n1:Geometric_Info><Tile_Geocoding><HORIZONTAL_CS_NAME>WGS84 / UTM zone 33N</HORIZONTAL_CS_NAME>
<HORIZONTAL_CS_CODE>EPSG:32633</HORIZONTAL_CS_CODE>{geo}</Tile_Geocoding></n1:Geometric_Info></n1:Level-1C_Tile_ID>
""")
    return safe


def zip_safe(safe: Path) -> Path:
    """The product as downloaded: its .SAFE folder in <name>.zip beside it."""
    import zipfile

    archive = safe.parent / (safe.stem + ".zip")
    with zipfile.ZipFile(archive, "w") as zf:
        for f in safe.rglob("*"):
            if f.is_file():
                zf.write(f.resolve(), f.relative_to(safe.parent).as_posix())
    return archive
