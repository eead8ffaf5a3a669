"""The real QGIS desktop (/usr/bin/qgis) under Xvfb with GLX maps a crop of the real Sentinel-2 scene.

The desktop loads Mesa's OpenGL driver (swrast_dri, linked to libLLVM-15) at start-up; TensorFlow imported
into that process hangs in dlopen or crashes. Offscreen tests never load OpenGL, so only this test sees it.
The session (qgis_session.py) runs urbanmtl:map_hse_lcz as its dialog does and reports what it loaded.

To check another version of the plugin (e.g. an old one, which hangs here), point URBANMTL_DESKTOP_PLUGIN at
its folder; URBANMTL_DESKTOP_PYTHONPATH is then put on QGIS's PYTHONPATH (an old version imported TensorFlow
into QGIS and needs the venv's site-packages there).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .harness import REPO, crop_scene, desktop_available, run_desktop, scene_available

pytestmark = pytest.mark.desktop

#: Seconds QGIS may take for start-up, the run and loading the results before it counts as hung.
TIME_LIMIT = 240
#: Rows 256..511, columns 512..767 of the 10 m scene: villages, fields and the lake (as tests/e2e).
CROP = (256, 512)
LAYER_NAME = "T33UUU 2017-02-16"


@pytest.mark.skipif(desktop_available() is not None, reason=str(desktop_available()))
@pytest.mark.skipif(not scene_available(), reason="../shared/data/scene is not available")
@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(), reason="the venv is missing (make venv)")
def test_desktop_runs_the_algorithm_and_loads_styled_layers(tmp_path):
    scene = crop_scene(tmp_path / "scene" / "T33UUU_crop.tif", *CROP)
    out = tmp_path / "out"
    out.mkdir()
    report_file = tmp_path / "report.json"
    config = {"report": str(report_file), "scene": str(scene), "layer_name": LAYER_NAME, "outputs": str(out),
              "screenshots": None, "timeout_s": TIME_LIMIT - 30}
    plugin = Path(os.environ.get("URBANMTL_DESKTOP_PLUGIN", REPO))
    extra = {"PYTHONPATH": os.environ["URBANMTL_DESKTOP_PYTHONPATH"]} if os.environ.get(
        "URBANMTL_DESKTOP_PYTHONPATH") else None
    run = run_desktop(config, tmp_path / "session", timeout=TIME_LIMIT, plugin=plugin, extra_env=extra)
    report = run.report or {}
    context = (f"QGIS {'was killed after' if run.timed_out else f'exited with {run.returncode} after'} "
               f"{run.seconds:.0f} s; session stage: {report.get('stage')}\n"
               f"report: {report}\n--- QGIS output (tail) ---\n{run.output[-4000:]}")
    assert not run.timed_out, "QGIS hung: " + context
    assert run.returncode == 0 and report.get("stage") == "done", context

    # The conditions of the bug: QGIS itself loaded the OpenGL driver and its LLVM.
    assert any("swrast_dri" in lib for lib in report["opengl"]), context
    assert any("libLLVM" in lib for lib in report["opengl"]), context
    # The plugin: started by QGIS from the profile, reloaded without warnings, its menu entry and button work.
    assert report["plugin_started_by_qgis"] and report["plugin_loaded"], context
    assert report["load_warnings"] == [], context
    assert "Map settlement density and local climate zones…" in report["menu"] and report["toolbar"], context
    assert report["dialog"]["visible"] and report["dialog"]["algorithm"] == "urbanmtl:map_hse_lcz", context

    # The run, in a child process: TensorFlow never entered QGIS.
    assert report["ok"], context
    assert report["heavy_modules_in_qgis"] == [], context
    assert all(report["outputs_exist"].values()), context
    log = "\n".join(report["feedback"])
    assert f"Input: {scene}" in log and "on CPU" in log and "km² of" in log, log
    assert " tiles in " in log or " tile in " in log, log
    assert "km2" not in log and "Traceback" not in log, log

    layers = {layer["name"]: layer for layer in report["layers"]}
    assert sorted(layers) == [f"HSE density - {LAYER_NAME}", f"LCZ - {LAYER_NAME}",
                              f"LCZ confidence - {LAYER_NAME}"], context
    hse, lcz = layers[f"HSE density - {LAYER_NAME}"], layers[f"LCZ - {LAYER_NAME}"]
    assert all(layer["valid"] for layer in layers.values()), context
    assert hse["renderer"] == "singlebandpseudocolor" and lcz["renderer"] == "paletted", context
    assert layers[f"LCZ confidence - {LAYER_NAME}"]["renderer"] == "singlebandpseudocolor", context
    assert hse["legend_title"] == "built-up fraction" and hse["legend"][0] == "built-up fraction", context
    assert hse["legend"][1:] == ["0 (none)", "0.25", "0.5", "0.75", "1 (fully built-up)"], context
    assert lcz["expanded"] and "2 Compact midrise" in lcz["legend"] and "G Water" in lcz["legend"], context

    # Nothing in the QGIS message log from loading or running: no warnings, no TensorFlow chatter.
    tensorflow_log = ("tensorflow/", "cpu_feature_guard", "oneDNN", "absl::", "WARNING: All log messages")
    noisy = [m for m in report["messages"]
             if "Warning" in m["message"] or any(t in m["message"] for t in tensorflow_log)
             or m["tag"] in ("urbanmtl", "Python warning", "Python error") or m["level"] >= 1]
    assert noisy == [], noisy


JP2_DIR = REPO.parent / "shared" / "data" / "scene" / "IMG_DATA"


@pytest.mark.skipif(desktop_available() is not None, reason=str(desktop_available()))
@pytest.mark.skipif(not JP2_DIR.exists(), reason="../shared/data/scene is not available")
@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(), reason="the venv is missing (make venv)")
def test_a_layer_added_from_a_products_subdataset_maps_the_whole_product(tmp_path):
    """A user opens a Level-1C product (baseline 04.00, real JP2 bands) the QGIS way, adds its 10 m subdataset
    (4 bands) as a layer and runs the algorithm as its dialog does: the maps are those of the .SAFE folder."""
    import subprocess

    from core.mapping.agreement import map_agreement
    from tests.fakedata import fake_safe

    safe = fake_safe(tmp_path / "products", JP2_DIR)
    layer_source = f"SENTINEL2_L1C:{safe / 'MTD_MSIL1C.xml'}:10m:EPSG_32633"
    out = tmp_path / "out"
    out.mkdir()
    report_file = tmp_path / "report.json"
    config = {"report": str(report_file), "scene": layer_source, "layer_name": "S2A 10 m", "outputs": str(out),
              "screenshots": None, "timeout_s": TIME_LIMIT - 30}
    run = run_desktop(config, tmp_path / "session", timeout=TIME_LIMIT)
    report = run.report or {}
    context = f"stage {report.get('stage')}; report {report}\n--- QGIS output ---\n{run.output[-3000:]}"
    assert not run.timed_out and run.returncode == 0 and report.get("stage") == "done", context
    assert report["scene_valid"] and report["ok"], context
    log = "\n".join(report["feedback"])
    assert "-1000" in log and "does not exist" not in log and "Traceback" not in log, log

    reference = tmp_path / "safe"
    done = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "core.predict", str(safe), "--hse",
                           str(reference / "hse.tif"), "--lcz", str(reference / "lcz.tif")], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    agreement = map_agreement(out / "hse.tif", out / "lcz.tif", reference / "hse.tif", reference / "lcz.tif")
    assert agreement.lcz_share == 1.0 and agreement.hse_max == 0.0, agreement.describe()
