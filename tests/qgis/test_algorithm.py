"""urbanmtl:map_hse_lcz run through processing.run on tiny synthetic images with a tiny random network."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from .conftest import TEN_BANDS, synthetic_dn, write_geotiff

# TensorFlow is imported by the plugin only after QGIS has started (see conftest.preload_system_sqlite).
pytestmark = pytest.mark.qgis

ALGORITHM_ID = "urbanmtl:map_hse_lcz"
SCENE_UL = (330000.0, 5822040.0)     # upper-left corner of every synthetic scene (EPSG:32633)


def base_parameters(scene: Path, model: Path, out: Path, **extra) -> dict:
    """Parameters of a fast run: small tiles, CPU, every output into folder `out`."""
    return {"INPUT": str(scene), "MODEL": str(model), "TILE_SIZE": 32, "OVERLAP": 8, "BATCH_SIZE": 4, "DEVICE": 1,
            "OUTPUT_HSE": str(out / "hse.tif"), "OUTPUT_LCZ": str(out / "lcz.tif"), **extra}


def run(parameters: dict, feedback=None) -> dict:
    import processing

    return processing.run(ALGORITHM_ID, parameters, feedback=feedback)


def read(path: str):
    """(array of band 1, rasterio profile) of a raster file."""
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1), src.profile


def style_of(path: str, default_style: bool = True) -> tuple[str, list[str]]:
    """(renderer type, legend labels) QGIS shows for the raster at `path` (its .qml sidecar applied)."""
    from qgis.core import QgsRasterLayer

    options = QgsRasterLayer.LayerOptions()
    options.loadDefaultStyle = default_style
    layer = QgsRasterLayer(path, "probe", "gdal", options)
    assert layer.isValid(), path
    result = layer.renderer().type(), [text for text, _ in layer.renderer().legendSymbologyItems()]
    del layer      # QGIS layers must not outlive the test, or the interpreter crashes at exit
    return result


def test_run_writes_styled_outputs_on_the_input_grid(plugin, tiny_model, tiny_scene, tmp_path):
    from qgis.core import QgsRasterLayer

    from urbanmtl.core.common.lcz import COLORS, NAMES, hex_to_rgb, label

    params = base_parameters(tiny_scene, tiny_model, tmp_path, OUTPUT_CONFIDENCE=str(tmp_path / "confidence.tif"),
                             OUTPUT_STATS=str(tmp_path / "stats.csv"))
    result = run(params)
    assert result["OUTPUT_HSE"] == params["OUTPUT_HSE"] and result["OUTPUT_LCZ"] == params["OUTPUT_LCZ"]
    assert result["OUTPUT_CONFIDENCE"] == params["OUTPUT_CONFIDENCE"]
    assert result["OUTPUT_STATS"] == params["OUTPUT_STATS"]

    # 48 x 40 px at 10 m -> 24 x 20 px at 20 m and 5 x 4 cells at 100 m (partial last cells included).
    hse, hse_profile = read(result["OUTPUT_HSE"])
    assert hse.shape == (20, 24) and hse_profile["dtype"] == "float32"
    assert hse_profile["transform"].a == 20 and hse_profile["transform"].e == -20
    assert (hse_profile["transform"].c, hse_profile["transform"].f) == SCENE_UL
    assert hse_profile["crs"].to_epsg() == 32633
    valid = np.isfinite(hse) & (hse != hse_profile["nodata"])
    assert valid.all() and (hse >= 0).all() and (hse <= 1).all()

    lcz, lcz_profile = read(result["OUTPUT_LCZ"])
    assert lcz.shape == (4, 5) and lcz_profile["dtype"] == "uint8" and lcz_profile["nodata"] == 0
    assert lcz_profile["transform"].a == 100 and (lcz_profile["transform"].c, lcz_profile["transform"].f) == SCENE_UL
    assert set(np.unique(lcz)) <= set(range(0, 18)) and (lcz[:3, :4] > 0).all()

    confidence, confidence_profile = read(result["OUTPUT_CONFIDENCE"])
    assert confidence.shape == lcz.shape and confidence_profile["dtype"] == "float32"
    cells = lcz > 0
    assert (confidence[cells] >= 1 / 17 - 1e-6).all() and (confidence[cells] <= 1 + 1e-6).all()

    with open(result["OUTPUT_STATS"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {"code", "name", "area_km2"} <= set(rows[0])
    # Every input pixel is valid, so the classes share the whole scene: 48 x 40 px of 100 m2 each.
    assert math.isclose(sum(float(r["area_km2"]) for r in rows), 48 * 40 * 100 / 1e6, rel_tol=1e-6)
    assert {r["name"] for r in rows} <= set(NAMES) | {label(c) for c in range(1, 18)}

    # Sidecar styles: QGIS opens the files styled, with the LCZ legend in words.
    for name in ("hse", "lcz", "confidence"):
        assert (tmp_path / f"{name}.qml").is_file(), name
    kind, labels = style_of(result["OUTPUT_LCZ"])
    assert kind == "paletted"
    assert labels == [label(code) for code in range(1, 18)]
    assert "2 Compact midrise" in labels and "G Water" in labels
    kind, labels = style_of(result["OUTPUT_HSE"])
    assert kind == "singlebandpseudocolor"
    assert labels == ["0 (none)", "0.25", "0.5", "0.75", "1 (fully built-up)"]
    assert style_of(result["OUTPUT_CONFIDENCE"])[0] == "singlebandpseudocolor"
    hse_layer = QgsRasterLayer(result["OUTPUT_HSE"], "hse", "gdal")
    shader = hse_layer.renderer().shader().rasterShaderFunction()
    colours = [item.color for item in shader.colorRampItemList()]
    assert colours[0].alpha() == 0, "HSE 0 must be transparent so the image shows through"
    assert all(c.alpha() == 255 for c in colours[1:])
    assert [c.lightness() for c in colours[1:]] == sorted((c.lightness() for c in colours[1:]), reverse=True)
    assert not shader.legendSettings().useContinuousLegend()      # one labelled line per stop
    del shader, hse_layer

    # The QML keeps the LCZ colours of core.common.lcz.
    layer = QgsRasterLayer(result["OUTPUT_LCZ"], "lcz", "gdal")
    colours = {c.value: c.color.name() for c in layer.renderer().classes()}
    del layer
    assert colours == {code: COLORS[code - 1] for code in range(1, 18)}
    assert hex_to_rgb(colours[17]) == hex_to_rgb("#6a6aff")


def test_layers_loaded_into_the_project_are_styled(plugin, tiny_model, tiny_scene, tmp_path):
    """The post-processor styles the layers Processing loads, whatever their default style."""
    import processing
    from qgis.core import QgsProject, QgsRasterLayer

    from urbanmtl.core.common.lcz import label
    from urbanmtl.ui.styles import LCZ, StylePostProcessor

    from qgis.core import QgsLayerTreeModel, QgsMapLayerLegendUtils

    params = base_parameters(tiny_scene, tiny_model, tmp_path, OUTPUT_HSE="TEMPORARY_OUTPUT",
                             OUTPUT_LCZ="TEMPORARY_OUTPUT", OUTPUT_CONFIDENCE=str(tmp_path / "confidence.tif"))
    project = QgsProject.instance()
    try:
        processing.runAndLoadResults(ALGORITHM_ID, params)
        layers = {l.name(): l for l in project.mapLayers().values() if isinstance(l, QgsRasterLayer)}
        # Named after the input layer (here the file's base name), whatever the output file is called.
        assert sorted(layers) == ["HSE density - tiny_s2", "LCZ - tiny_s2", "LCZ confidence - tiny_s2"]
        assert layers["LCZ - tiny_s2"].renderer().type() == "paletted"
        assert layers["HSE density - tiny_s2"].renderer().type() == "singlebandpseudocolor"
        assert layers["LCZ confidence - tiny_s2"].renderer().type() == "singlebandpseudocolor"
        lcz_layer = layers["LCZ - tiny_s2"]
        assert [t for t, _ in lcz_layer.renderer().legendSymbologyItems()][1] == label(2)
        root = project.layerTreeRoot()
        model = QgsLayerTreeModel(root)
        titles = {}
        for name, layer in layers.items():
            node = root.findLayer(layer.id())
            assert node.isExpanded(), name                       # the legend shows in the Layers panel
            titles[name] = QgsMapLayerLegendUtils.legendNodeUserLabel(node, 0)
            assert model.layerLegendNodes(node), name
        assert titles["HSE density - tiny_s2"] == "built-up fraction"
        assert titles["LCZ - tiny_s2"] == "local climate zone"
        del layers, lcz_layer, model, node, layer
    finally:
        project.removeAllMapLayers()

    # Directly: a layer opened without its sidecar (default grey) gets the LCZ legend from the post-processor.
    lcz_file = tmp_path / "plain.tif"
    write_geotiff(lcz_file, np.arange(1, 21, dtype=np.uint8).reshape(1, 4, 5) % 18, pixel=100.0)
    options = QgsRasterLayer.LayerOptions()
    options.loadDefaultStyle = False
    layer = QgsRasterLayer(str(lcz_file), "plain", "gdal", options)
    assert layer.renderer().type() != "paletted"
    StylePostProcessor(LCZ, "Local climate zones").postProcessLayer(layer, None, None)
    assert layer.renderer().type() == "paletted" and layer.name() == "Local climate zones"
    del layer


def test_cancel_stops_the_run_and_leaves_no_files(plugin, tiny_model, tiny_scene, tmp_path):
    """Cancel on the first progress report: the child stops, the run fails with "Cancelled", no file stays."""
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    out = tmp_path / "out"
    out.mkdir()
    feedback = QgsProcessingFeedback()
    progress = []

    def cancel_on_first_progress(percent: float) -> None:
        progress.append(percent)
        feedback.cancel()

    feedback.progressChanged.connect(cancel_on_first_progress)
    params = base_parameters(tiny_scene, tiny_model, out, TILE_SIZE=16, OVERLAP=0, BATCH_SIZE=1,
                             OUTPUT_STATS=str(out / "stats.csv"))
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        run(params, feedback)
    assert progress, "the engine reported no progress before finishing"
    assert sorted(p.name for p in out.iterdir()) == []


def test_bad_input_is_a_processing_exception_with_the_engine_message(plugin, tiny_model, tmp_path):
    from qgis.core import QgsProcessingException

    rgb = write_geotiff(tmp_path / "holiday_photo.tif", synthetic_dn(16, 16, 3))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(QgsProcessingException) as caught:
        run(base_parameters(rgb, tiny_model, out))
    assert "holiday_photo.tif" in str(caught.value) and "B2" in str(caught.value)
    assert list(out.iterdir()) == []


def test_missing_model_and_bad_output_name_are_clear_errors(plugin, tiny_scene, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="does not exist"):
        run(base_parameters(tiny_scene, tmp_path / "no_such_model.keras", tmp_path))
    with pytest.raises(QgsProcessingException, match=r"\.tif"):
        run(base_parameters(tiny_scene, tmp_path / "model.keras", tmp_path, OUTPUT_LCZ=str(tmp_path / "lcz.png")))
    assert not (tmp_path / "hse.tif").exists()


def test_bands_parameter_picks_and_orders_the_bands(plugin, tiny_model, tiny_scene, tmp_path):
    """A EuroSAT-ordered 13-band file without band names, with BANDS chosen, maps like the 10-band original."""
    import rasterio

    from urbanmtl.core.common.bands import LAYOUTS

    with rasterio.open(tiny_scene) as src:
        ten = src.read()
    eurosat = list(LAYOUTS["EUROSAT"])
    # Bands the model does not use are made unlike any real band, so reading them by mistake shows.
    thirteen = np.full((13,) + ten.shape[1:], 4000, dtype=np.uint16)
    for index, band in enumerate(TEN_BANDS):
        thirteen[eurosat.index(band)] = ten[index]
    scene = write_geotiff(tmp_path / "eurosat_like.tif", thirteen)
    chosen = [eurosat.index(band) + 1 for band in TEN_BANDS]          # [2, ..., 8, 13, 11, 12]

    reference = tmp_path / "reference"
    picked = tmp_path / "picked"
    unpicked = tmp_path / "unpicked"
    for folder in (reference, picked, unpicked):
        folder.mkdir()
    run(base_parameters(tiny_scene, tiny_model, reference))
    run(base_parameters(scene, tiny_model, picked, BANDS=chosen))
    run(base_parameters(scene, tiny_model, unpicked))        # read as Level-1C by its band count: wrong bands

    expected, _ = read(str(reference / "hse.tif"))
    assert expected.max() - expected.min() > 0.05, "the test model should respond to its input"
    # Same reflectance in the same order through the same tiles: the same numbers.
    np.testing.assert_allclose(read(str(picked / "hse.tif"))[0], expected, atol=1e-6)
    np.testing.assert_array_equal(read(str(picked / "lcz.tif"))[0], read(str(reference / "lcz.tif"))[0])
    assert np.abs(read(str(unpicked / "hse.tif"))[0] - expected).max() > 0.01


def test_extent_in_another_crs_is_converted_to_the_image_crs(plugin, tiny_model, tmp_path):
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsProject,
        QgsRectangle,
    )

    scene = write_geotiff(tmp_path / "wide.tif", synthetic_dn(40, 96, 10), TEN_BANDS)   # 960 m x 400 m
    # The eastern half of the scene, 480 m wide, given in WGS 84.
    east = QgsRectangle(SCENE_UL[0] + 480, SCENE_UL[1] - 400, SCENE_UL[0] + 960, SCENE_UL[1])
    to_wgs84 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32633"),
                                      QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    geographic = to_wgs84.transformBoundingBox(east)
    extent = (f"{geographic.xMinimum()!r},{geographic.xMaximum()!r},{geographic.yMinimum()!r},"
              f"{geographic.yMaximum()!r} [EPSG:4326]")
    out = tmp_path / "out"
    out.mkdir()
    run(base_parameters(scene, tiny_model, out, EXTENT=extent))

    import rasterio

    with rasterio.open(out / "hse.tif") as src:
        bounds = src.bounds
    # The bounding box of the reprojected rectangle is a little larger than the eastern half; never the whole scene.
    assert SCENE_UL[0] + 400 <= bounds.left <= SCENE_UL[0] + 480
    assert bounds.right >= SCENE_UL[0] + 960 - 20
    assert bounds.right - bounds.left < 700


STUBBORN_WORKER = """
import fcntl, json, os, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)          # a child busy in a long network call
params = json.load(open(sys.argv[-2]))
locks = []
for key in ("hse", "lcz"):
    final = Path(params[key])
    locks.append(os.open(final.with_name("." + final.name + ".urbanmtl-lock"), os.O_RDWR | os.O_CREAT))
    fcntl.flock(locks[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)   # as core.outputs.OutputLock does
    Path(final.parent, "." + final.stem + ".0123abcd.tmp" + final.suffix).write_bytes(b"partial")
    Path(final.parent, "." + final.stem + ".0123abcd.tmp" + final.suffix + ".aux.xml").write_text("<x/>")
print(json.dumps({"event": "progress", "percent": 1.0}), flush=True)
time.sleep(120)
"""


def stubborn_python(folder: Path) -> str:
    """An interpreter whose `-m core.worker` writes temporary outputs, then ignores SIGTERM and hangs."""
    worker = folder / "stubborn_worker.py"
    worker.write_text(STUBBORN_WORKER)
    python = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
    script = folder / "python-stubborn"
    script.write_text(f'#!/bin/sh\nif [ "$1" = "-m" ]; then shift 2; exec {python} {worker} "$@"; fi\n'
                      f'exec {python} "$@"\n')
    script.chmod(0o755)
    return str(script)


def test_cancel_kills_a_stuck_engine_within_seconds_and_removes_its_temporary_files(
        plugin, tiny_scene, tmp_path, monkeypatch):
    """SIGTERM ignored: the algorithm kills the child after 1 s and removes the files it left behind."""
    import time

    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("URBANMTL_PYTHON", stubborn_python(tmp_path))
    (out / ".other.0123abcd.tmp.tif").write_bytes(b"not ours")        # another output's file stays
    feedback = QgsProcessingFeedback()
    cancelled_at = []

    def cancel(percent: float) -> None:
        cancelled_at.append(time.monotonic())
        feedback.cancel()

    feedback.progressChanged.connect(cancel)
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        run(base_parameters(tiny_scene, tmp_path / "model.keras", out), feedback)
    stopped_after = time.monotonic() - cancelled_at[0]
    assert stopped_after < 2.0, f"the run ended {stopped_after:.1f} s after Cancel"
    assert sorted(p.name for p in out.iterdir()) == [".other.0123abcd.tmp.tif"]


def test_python_parameter_is_used_and_remembered(plugin, tiny_model, tiny_scene, tmp_path, monkeypatch):
    from qgis.core import QgsProcessingException, QgsSettings

    from urbanmtl.ui.interpreter import SETTINGS_KEY

    monkeypatch.delenv("URBANMTL_PYTHON", raising=False)
    settings = QgsSettings()
    try:
        with pytest.raises(QgsProcessingException, match="no_python.*does not exist"):
            run(base_parameters(tiny_scene, tiny_model, tmp_path, PYTHON=str(tmp_path / "no_python")))
        assert not settings.value(SETTINGS_KEY, "")
        monkeypatch.setenv("URBANMTL_PYTHON", str(tmp_path / "no_python"))
        with pytest.raises(QgsProcessingException, match="does not exist.*URBANMTL_PYTHON"):
            run(base_parameters(tiny_scene, tiny_model, tmp_path))
        monkeypatch.delenv("URBANMTL_PYTHON")
        python = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python")
        run(base_parameters(tiny_scene, tiny_model, tmp_path, PYTHON=python))
        assert settings.value(SETTINGS_KEY, "") == python
        # The remembered choice is used from then on, and a wrong one is named with where it came from.
        settings.setValue(SETTINGS_KEY, str(tmp_path / "gone" / "python3"))
        with pytest.raises(QgsProcessingException, match="setting urbanmtl/python"):
            run(base_parameters(tiny_scene, tiny_model, tmp_path))
    finally:
        settings.remove(SETTINGS_KEY)
