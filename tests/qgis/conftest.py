"""Fixtures for the QGIS tests: the plugin importable as `urbanmtl`, a QGIS app, Processing, tiny data and model."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

SYSTEM_SQLITE = "libsqlite3.so.0"


def preload_system_sqlite() -> None:
    """Put the system SQLite first in the process's global symbol scope.

    TensorFlow loads libtensorflow_cc with RTLD_GLOBAL, and that library exports its own copy of SQLite. If
    TensorFlow comes first, QGIS's SQLite users (Qt's QSQLITE driver at QgsApplication.initQgis) bind half to
    that copy and crash. The qgis and qgis_process executables link SQLite themselves, so only a Python
    process hosting QGIS (these tests) is exposed. Loading the system library globally first prevents it.
    """
    try:
        ctypes.CDLL(SYSTEM_SQLITE, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        pass


def sqlite_shadowed() -> Optional[str]:
    """A sentence saying why QGIS cannot start in this process, or None when SQLite resolves to the system one."""
    try:
        first = ctypes.cast(ctypes.CDLL(None).sqlite3_libversion, ctypes.c_void_p).value
        system = ctypes.cast(ctypes.CDLL(SYSTEM_SQLITE).sqlite3_libversion, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None
    if first == system:
        return None
    return (
        "TensorFlow was imported in this pytest process before QGIS and its copy of SQLite now shadows the "
        "system one, so QgsApplication.initQgis() would crash. Load the system SQLite first: put "
        "`import ctypes; ctypes.CDLL('libsqlite3.so.0', mode=ctypes.RTLD_GLOBAL)` at the top of a conftest.py "
        "that pytest loads before any test module (the repository root), or run tests/qgis in its own process."
    )


preload_system_sqlite()
pytest.importorskip("qgis.core", reason="python3-qgis is not installed")

REPO = Path(__file__).resolve().parents[2]
#: Where Debian's python3-qgis keeps the Processing framework (the `processing` package).
QGIS_PYTHON_PLUGINS = "/usr/share/qgis/python/plugins"

#: The ten model bands as the synthetic images name them (file order = model order).
TEN_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")


def expose_plugin(folder: Path) -> Path:
    """Make the repository importable as the package `urbanmtl` (the name QGIS gives the installed plugin)."""
    link = folder / "urbanmtl"
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return folder


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding `urbanmtl -> repository`, put first on sys.path (as QGIS_PLUGINPATH would)."""
    folder = expose_plugin(tmp_path_factory.mktemp("plugins"))
    sys.path.insert(0, str(folder))
    if QGIS_PYTHON_PLUGINS not in sys.path:
        sys.path.append(QGIS_PYTHON_PLUGINS)
    return folder


@pytest.fixture(scope="session")
def qgis_app(plugin_dir: Path):
    """The QGIS application (offscreen), started once for the session."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    problem = sqlite_shadowed()
    if problem:
        pytest.fail(problem, pytrace=False)
    from qgis.testing import start_app

    return start_app()


@pytest.fixture(scope="session")
def plugin(qgis_app):
    """Processing initialised and the urbanmtl plugin started the way qgis_process starts it."""
    from processing.core.Processing import Processing

    Processing.initialize()
    import urbanmtl

    instance = urbanmtl.classFactory(None)
    instance.initProcessing()
    assert instance.provider is not None, "the urbanmtl provider did not register (see the QGIS message log)"
    yield instance
    instance.unload()


@pytest.fixture(scope="session")
def tiny_model(plugin, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight network (base width 4) saved as model.keras with its card; seeded, so repeatable.

    A freshly initialised network answers HSE = 0.5 +- 1e-4 whatever the input; its HSE head is scaled up so
    the maps vary with the input (0.3..0.7) and tests comparing runs can tell different inputs apart.
    """
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed in this Python")
    import keras

    # The plugin's own copy of the engine, so that one set of Keras classes is registered in this process.
    from urbanmtl.core.network.model import ModelConfig, build_networks
    from urbanmtl.core.network.saving import base_card, save_model

    keras.utils.set_random_seed(7)
    config = ModelConfig(base_width=4)
    train, network = build_networks(config)
    head = train.get_layer("hse")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 1e4, bias])
    return save_model(network, tmp_path_factory.mktemp("model") / "model.keras", base_card(config, network))


def synthetic_dn(height: int, width: int, bands: int, seed: int = 0) -> np.ndarray:
    """Sentinel-2-like uint16 DN, shape (bands, height, width): a bright 'town' block, a dark 'lake', fields.

    Values 200..4000 (reflectance 0.02..0.4), never 0, so no pixel is nodata.
    """
    rng = np.random.default_rng(seed)
    base = np.linspace(800, 2600, bands)[:, None, None]
    dn = base + rng.normal(0, 120, (bands, height, width))
    dn[:, : height // 2, : width // 3] += 900            # town: bright in every band
    dn[:, height // 2:, width // 2:] = 300 + rng.normal(0, 30, (bands, height - height // 2, width - width // 2))
    return np.clip(dn, 200, 4000).astype(np.uint16)


def write_geotiff(path: Path, dn: np.ndarray, descriptions=None, *, pixel: float = 10.0,
                  origin=(330000.0, 5822040.0), crs: str = "EPSG:32633") -> Path:
    """Write `dn` (bands, height, width) as a GeoTIFF with nodata 0 on a `pixel` m grid with optional band names
    (tests.fakedata.write_raster)."""
    from tests.fakedata import scene_transform, write_raster

    write_raster(path, dn, crs, scene_transform(origin, pixel), nodata=0, descriptions=descriptions)
    return path


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-band 48 x 40 px (480 m x 400 m) GeoTIFF at 10 m, EPSG:32633, bands named B2..B12."""
    path = tmp_path_factory.mktemp("scene") / "tiny_s2.tif"
    return write_geotiff(path, synthetic_dn(40, 48, len(TEN_BANDS)), TEN_BANDS)
