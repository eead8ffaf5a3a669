"""Open training/evaluation data from a path: detect its format from its content and build the Datasets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import h5py

from ..common.errors import UrbanMTLError
from .base import Dataset, check_patch_size
from .manifest import SceneSpec, load_manifest, parse_manifest_text
from .patches import PATCH_FORMATS
from .scene import SceneDataset

#: Formats `open_datasets` understands, with what identifies each (also the text of the "unknown" error).
FORMATS: dict[str, str] = {
    "authors": "HDF5 with x (N,S,S,10) and y_0 (HSE percent) and/or y_1 (one-hot LCZ)",
    "so2sat": "So2Sat LCZ42 HDF5 with sen2 (N,32,32,10) and label (N,17)",
    "eurosat": "HDF5 with x (N,64,64,13 EuroSAT bands) and lcz_prob (the shared EuroSAT teacher file)",
    "scene": "YAML/JSON manifest with an image: key and hse:/lcz:/lcz_polygons: references",
    "scenes": "a folder of scene manifests (*.yaml, *.yml, *.json with an image: key), one dataset each",
    "shared": "the shared/data folder (eurosat/eurosat_s2_teacher.h5 and/or scene/T33UUU_20170216_L1C_13band.tif)",
}

#: Files of the shared data folder (shared/data/README.md).
SHARED_EUROSAT = Path("eurosat") / "eurosat_s2_teacher.h5"
SHARED_SCENE_DIR = Path("scene")
SHARED_SCENE_IMAGE = "T33UUU_20170216_L1C_13band.tif"
SHARED_SCENE_LCZ = "T33UUU_20170216_lcz_teacher_20m.tif"
SHARED_SCENE_HSE = "T33UUU_20170216_hse_teacher.tif"

#: Bytes of a file read to tell a text manifest from anything else.
_SNIFF_BYTES = 1 << 20


def _supported() -> str:
    return "; ".join(f"{name}: {what}" for name, what in FORMATS.items())


def split_spec(spec: str | os.PathLike) -> tuple[Optional[str], Path]:
    """("format" or None, path) of a data spec "PATH" or "FORMAT:PATH" (FORMAT one of FORMATS).

    Only a known format name counts as a prefix, so Windows drive letters ("C:\\data") stay part of the path.
    """
    text = os.fspath(spec)
    head, sep, tail = text.partition(":")
    if sep and head.strip().lower() in FORMATS:
        return head.strip().lower(), Path(tail).expanduser()
    return None, Path(text).expanduser()


def open_datasets(spec: str | os.PathLike, patch_size: int = 128) -> list[Dataset]:
    """The Datasets a data spec names: a path (format detected from content) or "FORMAT:PATH".

    patch_size: side in 10 m pixels of the windows cut from scenes (a multiple of 8); patch files keep the
    size they store. Returns one Dataset, or [EuroSAT, scene] for the shared data folder. Raises
    UrbanMTLError for a missing path, an unknown format, or a file that does not fit its format.
    """
    patch_size = check_patch_size(patch_size)
    forced, path = split_spec(spec)
    if not path.exists():
        raise UrbanMTLError(
            f"The data path '{path}' does not exist. Give an HDF5 patch file, a scene manifest or the shared "
            f"data folder."
        )
    fmt = forced or detect_format(path)
    if fmt == "shared":
        return open_shared(path, patch_size)
    if fmt == "scenes":
        return open_scene_folder(path, patch_size)
    if path.is_dir():
        raise UrbanMTLError(
            f"'{path}' is a folder; the {fmt} format needs a file. Give the file itself."
        )
    if fmt in PATCH_FORMATS:
        if not h5py.is_hdf5(path):
            raise UrbanMTLError(
                f"'{path}' is not an HDF5 file, so it cannot be read as {fmt} ({FORMATS[fmt]}). Give the "
                f"right file or drop the '{fmt}:' prefix to detect the format."
            )
        return [PATCH_FORMATS[fmt](path)]
    if fmt == "scene":
        return [SceneDataset(load_manifest(path), patch_size)]
    raise UrbanMTLError(f"Unknown data format '{fmt}'. Supported formats: {', '.join(FORMATS)}.")


def detect_format(path: Path) -> str:
    """The format of an existing file or folder, from its content; UrbanMTLError listing what was found."""
    if path.is_dir():
        return _folder_format(path)
    if h5py.is_hdf5(path):
        return _hdf5_format(path)
    if _is_scene_manifest(path):
        return "scene"
    raster = _raster_summary(path)
    if raster:
        raise UrbanMTLError(
            f"'{path}' is a raster ({raster}), not a training dataset. Write a scene manifest (YAML) naming it "
            f"as image: together with its HSE/LCZ references, and pass the manifest."
        )
    raise UrbanMTLError(
        f"Unknown format: '{path}' is neither HDF5 nor a YAML/JSON scene manifest nor a raster. Supported "
        f"formats: {_supported()}."
    )


def _folder_format(path: Path) -> str:
    if (path / SHARED_EUROSAT).is_file() or (path / SHARED_SCENE_DIR / SHARED_SCENE_IMAGE).is_file() \
            or (path / SHARED_SCENE_IMAGE).is_file():
        return "shared"
    if scene_manifests(path):
        return "scenes"
    names = sorted(p.name for p in path.iterdir())[:12]
    raise UrbanMTLError(
        f"Cannot tell what kind of data the folder '{path}' holds (it contains: "
        f"{', '.join(names) or 'nothing'}). Supported formats: {_supported()}. Give a file, or force a "
        f"format with FORMAT:PATH."
    )


def _hdf5_format(path: Path) -> str:
    try:
        with h5py.File(path, "r") as f:
            keys = sorted(f.keys())
            shapes = {k: tuple(f[k].shape) for k in keys if isinstance(f[k], h5py.Dataset)}
    except OSError as exc:
        raise UrbanMTLError(f"Cannot read the HDF5 file '{path}' ({exc}). Check that it is complete.") \
            from None
    if "x" in keys and "lcz_prob" in keys:
        return "eurosat"
    if "sen2" in keys and "label" in keys:
        return "so2sat"
    if "x" in keys and ("y_0" in keys or "y_1" in keys):
        return "authors"
    found = ", ".join(f"{k} {shapes.get(k, '(group)')}" for k in keys) or "no datasets"
    raise UrbanMTLError(
        f"Unknown format: the HDF5 file '{path}' holds {found}, which matches no supported format. "
        f"Supported formats: {_supported()}. Rename the datasets or force a format with FORMAT:PATH."
    )


def _is_scene_manifest(path: Path) -> bool:
    """True for a YAML/JSON mapping with an 'image' key; UrbanMTLError for a mapping without one."""
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    try:
        content = parse_manifest_text(text, str(path))
    except UrbanMTLError:
        return False
    if isinstance(content, dict) and "image" not in content:
        raise UrbanMTLError(
            f"Unknown format: '{path}' is a YAML/JSON mapping with keys {', '.join(map(str, content))} but "
            f"no 'image' key. A scene manifest needs 'image:' and at least one reference; supported "
            f"formats: {_supported()}."
        )
    return isinstance(content, dict)


def _raster_summary(path: Path) -> str:
    """"13 bands, 96 x 96 px" if GDAL reads the file as a raster, else ""."""
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as src:
            return f"{src.count} band(s), {src.width} x {src.height} px"
    except (RasterioError, OSError):
        return ""


def shared_scene_spec(scene_dir: Path) -> SceneSpec:
    """The in-memory manifest of the shared T33UUU scene: 13-band L1C image (DN / 10000, no offset), LCZ from
    the 17-band 20 m teacher (uint8 = p x 255), HSE from the 20 m proxy (value / 254, 255 = nodata)."""
    source = str(scene_dir)
    mapping = {
        "name": "T33UUU_20170216",
        "image": SHARED_SCENE_IMAGE,
        "layout": "L1C",
        # 2017 product, processing baseline < 04.00 (shared/data/README.md).
        "offset": 0,
        "hse": SHARED_SCENE_HSE,
        "hse_scale": "1/254",
        "hse_nodata": [255],
        "lcz": SHARED_SCENE_LCZ,
        "lcz_kind": "probabilities",
        "lcz_scale": "1/255",
        "lcz_resampling": "bilinear",
    }
    return SceneSpec.from_mapping(mapping, scene_dir, source)


def open_shared(path: Path, patch_size: int) -> list[Dataset]:
    """[EuroSAT, scene] from the shared data folder, the scene folder alone, or the EuroSAT file alone."""
    datasets: list[Dataset] = []
    if path.is_file():
        return [PATCH_FORMATS["eurosat"](path)]
    if (path / SHARED_EUROSAT).is_file():
        datasets.append(PATCH_FORMATS["eurosat"](path / SHARED_EUROSAT))
    for scene_dir in (path / SHARED_SCENE_DIR, path):
        if (scene_dir / SHARED_SCENE_IMAGE).is_file():
            datasets.append(SceneDataset(shared_scene_spec(scene_dir), patch_size))
            break
    if not datasets:
        raise UrbanMTLError(
            f"'{path}' is not the shared data folder: it has neither {SHARED_EUROSAT} nor "
            f"{SHARED_SCENE_DIR / SHARED_SCENE_IMAGE}. Give shared/data, shared/data/scene or the EuroSAT file."
        )
    return datasets


def scene_manifests(folder: Path) -> list[Path]:
    """The scene manifests of a folder (YAML/JSON files with an 'image' key), sorted by name."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        try:
            content = parse_manifest_text(path.read_text(encoding="utf-8"), str(path))
        except (UrbanMTLError, OSError, UnicodeDecodeError):
            continue
        if isinstance(content, dict) and "image" in content:
            found.append(path)
    return found


def open_scene_folder(path: Path, patch_size: int) -> list[Dataset]:
    """One SceneDataset per manifest of the folder; each remembers the folder as its `group` (a split may then
    hold whole scenes out, see core.train). Scenes are read window by window: memory does not grow with their
    number."""
    if not path.is_dir():
        raise UrbanMTLError(f"'{path}' is not a folder; the scenes format needs a folder of scene manifests.")
    manifests = scene_manifests(path)
    if not manifests:
        raise UrbanMTLError(
            f"The folder '{path}' holds no scene manifest (a YAML/JSON file with an 'image:' key). Add one per "
            f"scene (see core/data/scene.py) or give the manifests themselves.")
    return [SceneDataset(load_manifest(m), patch_size, group=path.name) for m in manifests]
