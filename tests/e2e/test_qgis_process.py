"""End to end: the installed-plugin path through the real qgis_process.bin on a crop of the real Sentinel-2 scene.

QGIS's own Python gets no TensorFlow: the algorithm runs the engine in a child process with the checkout's
.venv/bin/python (found next to the plugin), so nothing of the venv is put on QGIS's PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.desktop.harness import scene_available

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCENE = REPO.parent / "shared" / "data" / "scene" / "T33UUU_20170216_L1C_13band.tif"
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
#: The venv's own packages (TensorFlow, Keras); the system ones (qgis, GDAL, rasterio, h5py) come from Debian.
VENV_SITE = REPO / ".venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
CROP = 256          # pixels at 10 m: 2.56 km x 2.56 km
CROP_OFFSET = (256, 512)   # (row, col) of the crop's upper-left pixel: villages, fields and the lake


def qgis_environment(home: Path, plugins: Path) -> dict[str, str]:
    """What qgis_process needs: a throwaway profile, the plugin folder, no display; no TensorFlow for QGIS."""
    # qgis.testing (tests/qgis, same pytest process) sets QGIS_CUSTOM_CONFIG_PATH; keep every QGIS_ setting out,
    # and this test's own interpreter settings (PYTHONPATH, a venv's PYTHONHOME) out of QGIS's embedded Python.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QGIS_", "URBANMTL_")) and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HOME=str(home), QGIS_PLUGINPATH=str(plugins), QT_QPA_PLATFORM="offscreen",
               XDG_RUNTIME_DIR=str(home / "runtime"))
    (home / "runtime").mkdir(mode=0o700, exist_ok=True)
    return env


def qgis_process(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(QGIS_PROCESS), *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, (
        f"qgis_process {' '.join(args)} exited with {done.returncode}\n--- stdout ---\n{done.stdout}"
        f"\n--- stderr ---\n{done.stderr}"
    )
    return done


def crop_scene(path: Path) -> Path:
    """Write a CROP x CROP window of the real 13-band L1C scene (from the stack, or else from its JP2 band
    files), band names and georeference kept."""
    from tests.desktop.harness import crop_scene as crop

    return crop(path, CROP_OFFSET[0], CROP_OFFSET[1], CROP, CROP)


def tiny_model(path: Path) -> Path:
    """A random-weight base-width-4 network saved as .keras with its card (the bundled model may not exist)."""
    import keras

    from core.network.model import ModelConfig, build_networks
    from core.network.saving import base_card, save_model

    keras.utils.set_random_seed(3)
    config = ModelConfig(base_width=4)
    _, network = build_networks(config)
    return save_model(network, path, base_card(config, network))


@pytest.mark.skipif(not scene_available(), reason="../shared/data is not available")
@pytest.mark.skipif(not QGIS_PROCESS.exists(), reason="qgis_process.bin (QGIS 3.22) is not installed")
@pytest.mark.skipif(not VENV_PYTHON.exists(), reason="the venv with TensorFlow is missing (make venv)")
def test_qgis_process_maps_a_real_scene_crop(tmp_path):
    pytest.importorskip("tensorflow")
    import rasterio
    from osgeo import gdal

    from core.common.lcz import COLORS, hex_to_rgb, label

    home = tmp_path / "home"
    plugins = tmp_path / "plugins"
    out = tmp_path / "out"
    for folder in (home, plugins, out):
        folder.mkdir()
    (plugins / "urbanmtl").symlink_to(REPO, target_is_directory=True)
    env = qgis_environment(home, plugins)

    scene = crop_scene(tmp_path / "crop.tif")
    model = tiny_model(tmp_path / "model" / "model.keras")

    listed = qgis_process(env, "plugins", "enable", "urbanmtl")
    assert "urbanmtl" in listed.stdout + listed.stderr
    hse, lcz = out / "hse.tif", out / "lcz.tif"
    done = qgis_process(env, "run", "urbanmtl:map_hse_lcz", "--", f"INPUT={scene}", f"MODEL={model}",
                        "TILE_SIZE=128", "OVERLAP=16", "DEVICE=1", f"OUTPUT_HSE={hse}", f"OUTPUT_LCZ={lcz}")
    log = f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    # The engine ran in the venv's Python, in its own process; the log says what was mapped, in km².
    assert f"Engine: {plugins / 'urbanmtl' / '.venv' / 'bin' / 'python'}" in done.stdout, log
    assert "km² of" in done.stdout and "km2" not in done.stdout, log
    assert "Traceback" not in log, log

    with rasterio.open(scene) as src:
        upper_left = (src.transform.c, src.transform.f)
    with rasterio.open(hse) as src:
        assert src.crs.to_epsg() == 32633, log
        assert (src.transform.a, src.transform.e) == (20.0, -20.0), log
        assert (src.transform.c, src.transform.f) == upper_left, log
        assert (src.width, src.height) == (CROP // 2, CROP // 2) and src.dtypes[0] == "float32", log
        density = src.read(1, masked=True)
        assert density.count() == density.size and 0 <= density.min() and density.max() <= 1, log
    with rasterio.open(lcz) as src:
        assert src.crs.to_epsg() == 32633, log
        assert (src.transform.a, src.transform.e) == (100.0, -100.0), log
        assert (src.transform.c, src.transform.f) == upper_left, log
        assert (src.width, src.height) == (-(-CROP // 10), -(-CROP // 10)) and src.dtypes[0] == "uint8", log
        assert src.nodata == 0
        codes = src.read(1)
        assert set(np.unique(codes)) <= set(range(18)) and (codes[:-1, :-1] > 0).all(), log
        colormap = src.colormap(1)
        for code in range(1, 18):
            assert tuple(colormap[code][:3]) == hex_to_rgb(COLORS[code - 1]), code
    dataset = gdal.Open(str(lcz))          # held in a variable: a band outliving its dataset crashes GDAL
    # GDAL 3.6's GeoTIFF driver reads the .aux.xml (where category names live) lazily; GetCategoryNames
    # alone does not trigger it, GetGeoTransform does (gdalinfo and QGIS always read georeferencing first).
    dataset.GetGeoTransform()
    names = dataset.GetRasterBand(1).GetCategoryNames()
    dataset = None
    assert names is not None and names[2] == label(2) and names[17] == label(17), names

    for raster in (hse, lcz):
        qml = raster.with_suffix(".qml")
        assert qml.is_file(), f"no style beside {raster}\n{log}"
    lcz_style = lcz.with_suffix(".qml").read_text(encoding="utf-8")
    assert 'type="paletted"' in lcz_style and 'label="2 Compact midrise"' in lcz_style
    assert 'type="singlebandpseudocolor"' in hse.with_suffix(".qml").read_text(encoding="utf-8")
    shutil.rmtree(home, ignore_errors=True)
