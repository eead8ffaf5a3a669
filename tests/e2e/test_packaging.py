"""`make zip` and `make install` (mk/plugin.mk): what ships, and that the installed copy loads in qgis_process."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def make(*args: str) -> subprocess.CompletedProcess:
    """Run a target of mk/plugin.mk alone (the top Makefile would also set up the venv)."""
    done = subprocess.run(["make", "-s", "-C", str(REPO), "-f", "mk/plugin.mk", *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"make {' '.join(args)} failed\n{done.stdout}\n{done.stderr}"
    return done


def version() -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    return parser["general"]["version"]


@needs_make
def test_zip_holds_the_plugin_under_one_folder_and_nothing_else(tmp_path):
    plan = make("-n", "zip")
    assert f"dist/urbanmtl-{version()}.zip" in plan.stdout      # the default name carries the version

    archive = tmp_path / "urbanmtl.zip"
    make("zip", f"PLUGIN_STAGE={tmp_path / 'stage' / 'urbanmtl'}", f"PLUGIN_ZIP={archive}")
    names = zipfile.ZipFile(archive).namelist()
    assert all(n.startswith("urbanmtl/") for n in names), names
    for needed in ("metadata.txt", "__init__.py", "plugin.py", "ui/algorithm.py", "ui/provider.py",
                   "ui/styles.py", "ui/icons/urbanmtl.png", "core/predict.py", "core/worker.py",
                   "core/network/model.py", "core/common/lcz.py", "core/mapping/predict.py"):
        assert f"urbanmtl/{needed}" in names, needed
    for shipped in ("models/model.keras", "models/model_card.json", "models/MODEL_CARD.md"):
        assert f"urbanmtl/{shipped}" in names, shipped        # the bundled model and both of its cards
    for unwanted in ("/tests/", "/bench/", "/tools/", "/docs/", "/.venv/", "__pycache__", ".pyc", "/.git/",
                     "/runs/", "/dist/", "/build/"):
        assert not [n for n in names if unwanted in n], unwanted


@needs_make
@pytest.mark.skipif(not QGIS_PROCESS.exists(), reason="qgis_process.bin (QGIS 3.22) is not installed")
def test_installed_copy_loads_in_qgis_process_and_explains_the_missing_engine(tmp_path):
    """Installed into a fresh profile and run by QGIS's own Python, which has no TensorFlow here."""
    import rasterio
    from rasterio.transform import from_origin

    home = tmp_path / "home"
    profile = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"
    stage = tmp_path / "stage" / "urbanmtl"
    make("install", f"QGIS_PROFILE_DIR={profile}", f"PLUGIN_STAGE={stage}")
    (profile / "python" / "plugins" / "urbanmtl" / "stale.txt").write_text("left from an older version")
    make("install", f"QGIS_PROFILE_DIR={profile}", f"PLUGIN_STAGE={stage}")      # a reinstall replaces it all
    installed = profile / "python" / "plugins" / "urbanmtl"
    assert installed.is_dir() and not installed.is_symlink()
    assert (installed / "metadata.txt").is_file() and (installed / "core" / "network" / "model.py").is_file()
    assert not (installed / "tests").exists() and not (installed / "stale.txt").exists()

    # Nothing of this process's set-up may leak in: e.g. qgis.testing sets QGIS_CUSTOM_CONFIG_PATH, which would
    # move the profile away from HOME.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("QGIS_")}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(tmp_path / "runtime"))
    (tmp_path / "runtime").mkdir(mode=0o700)

    def qgis_process(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(QGIS_PROCESS), *args], capture_output=True, text=True, env=env, timeout=300)

    enabled = qgis_process("plugins", "enable", "urbanmtl")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    described = qgis_process("help", "urbanmtl:map_hse_lcz")
    assert described.returncode == 0 and "Map settlement density and local climate zones" in described.stdout, (
        described.stdout + described.stderr)

    has_runtime = subprocess.run(["/usr/bin/python3", "-s", "-c", "import ai_edge_litert"], capture_output=True,
                                 env=env, timeout=120).returncode == 0
    if has_runtime:
        pytest.skip("QGIS's own Python has LiteRT here; the missing-engine message cannot be checked")
    scene = tmp_path / "scene.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=16, height=16, count=10, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(330000, 5822040, 10, 10)) as dst:
        dst.write(np.full((10, 16, 16), 1200, np.uint16))
    ran = qgis_process("run", "urbanmtl:map_hse_lcz", "--", f"INPUT={scene}",
                       f"OUTPUT_HSE={tmp_path / 'hse.tif'}", f"OUTPUT_LCZ={tmp_path / 'lcz.tif'}")
    output = ran.stdout + ran.stderr
    assert ran.returncode != 0, output
    assert "urbanmtl:install_engine" in output and "'ai_edge_litert'" in output, output
    assert not (tmp_path / "hse.tif").exists()
