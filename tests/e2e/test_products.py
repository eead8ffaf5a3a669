"""Sentinel-2 products opened the QGIS way, through the real qgis_process.bin: a Level-1C product of processing
baseline 04.00 around real JP2 band files (the shared T33UUU sample, linked into a SAFE) maps to the same maps as its
.SAFE folder when given as its 10 m or 20 m subdataset name, a /vsizip/ path into its .zip, or the subdataset of
that path (the desktop's layer from a subdataset: tests/desktop)."""

from __future__ import annotations

import subprocess

import pytest

from core.mapping.agreement import map_agreement
from tests.desktop.harness import scene_available
from tests.e2e.test_qgis_process import QGIS_PROCESS, REPO, VENV_PYTHON, qgis_environment, qgis_process
from tests.fakedata import fake_safe, zip_safe

pytestmark = pytest.mark.e2e

JP2_DIR = REPO.parent / "shared" / "data" / "scene" / "IMG_DATA"


@pytest.mark.skipif(not scene_available() or not JP2_DIR.exists(), reason="../shared/data is not available")
@pytest.mark.skipif(not QGIS_PROCESS.exists(), reason="qgis_process.bin (QGIS 3.22) is not installed")
@pytest.mark.skipif(not VENV_PYTHON.exists(), reason="the venv is missing (make venv)")
def test_subdatasets_and_vsizip_paths_map_as_the_safe_folder(tmp_path):
    safe = fake_safe(tmp_path / "products", JP2_DIR)
    archive = zip_safe(safe)
    xml = safe / "MTD_MSIL1C.xml"
    inner = f"/vsizip/{archive}/{safe.name}/MTD_MSIL1C.xml"
    inputs = {"sub10": f"SENTINEL2_L1C:{xml}:10m:EPSG_32633",
              "sub20": f"SENTINEL2_L1C:{xml}:20m:EPSG_32633", "vsizip": inner,
              "zipsub": f"SENTINEL2_L1C:{inner}:10m:EPSG_32633"}
    home, plugins = tmp_path / "home", tmp_path / "plugins"
    home.mkdir()
    plugins.mkdir()
    (plugins / "urbanmtl").symlink_to(REPO, target_is_directory=True)
    env = qgis_environment(home, plugins)
    qgis_process(env, "plugins", "enable", "urbanmtl")
    maps = {}
    for name, source in inputs.items():
        out = tmp_path / name
        out.mkdir()
        done = qgis_process(env, "run", "urbanmtl:map_hse_lcz", "--", f"INPUT={source}",
                            f"OUTPUT_HSE={out / 'hse.tif'}", f"OUTPUT_LCZ={out / 'lcz.tif'}")
        log = done.stdout + done.stderr
        assert "Traceback" not in log and "does not exist" not in log, log
        assert "-1000" in log, log                      # the baseline's offset, read from the product
        maps[name] = (out / "hse.tif", out / "lcz.tif")
    # The .SAFE folder, mapped by the checkout's engine (QGIS cannot take a folder as a raster layer).
    reference = tmp_path / "safe"
    reference.mkdir()
    done = subprocess.run([str(VENV_PYTHON), "-m", "core.predict", str(safe), "--hse", str(reference / "hse.tif"),
                           "--lcz", str(reference / "lcz.tif")], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    for name in inputs:
        agreement = map_agreement(*maps[name], reference / "hse.tif", reference / "lcz.tif")
        assert agreement.lcz_share == 1.0 and agreement.hse_max == 0.0, (name, agreement.describe())
