"""The plugin shell: metadata.txt, provider registration, parameters, start-up safety, loading without TensorFlow."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import textwrap

import pytest

from .conftest import QGIS_PYTHON_PLUGINS, REPO, TEN_BANDS, synthetic_dn, write_geotiff

pytestmark = pytest.mark.qgis

ALGORITHM_ID = "urbanmtl:map_hse_lcz"
REQUIRED_METADATA = (
    "name", "qgisMinimumVersion", "description", "about", "version", "author", "tags", "category", "icon",
    "experimental", "hasProcessingProvider", "license", "email", "tracker", "repository", "homepage",
)
#: Placeholder contacts that must not ship (the validator refuses its own placeholders http://bugs, http://repo).
PLACEHOLDERS = ("example.org", "example.com", "http://bugs", "http://repo", "http://homepage")


def read_metadata() -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    return dict(parser["general"])


def test_metadata_has_every_required_field():
    metadata = {k.lower(): v for k, v in read_metadata().items()}
    missing = [f for f in REQUIRED_METADATA if not metadata.get(f.lower(), "").strip()]
    assert not missing, f"metadata.txt lacks {missing}"
    assert metadata["name"] == "urbanmtl"
    assert metadata["qgisminimumversion"] == "3.22"
    assert metadata["category"] == "Raster"
    assert metadata["hasprocessingprovider"] == "yes"
    assert metadata["experimental"] in ("True", "False")
    assert (REPO / metadata["icon"]).is_file()
    for url in ("repository", "tracker", "homepage"):
        assert metadata[url].startswith("https://" + "github.com/urbanmtl/urbanmtl")    # the public home, once
    text = (REPO / "metadata.txt").read_text(encoding="utf-8")
    assert not [p for p in PLACEHOLDERS if p in text], "placeholder contact in metadata.txt"
    assert "km2" not in text


def test_metadata_version_is_the_engine_version():
    from core import __version__

    assert read_metadata()["version"] == __version__


def test_provider_registers_and_unregisters(qgis_app, plugin):
    from qgis.core import QgsApplication

    import urbanmtl

    registry = QgsApplication.processingRegistry()
    assert registry.providerById("urbanmtl") is plugin.provider
    algorithm = registry.algorithmById(ALGORITHM_ID)
    assert algorithm is not None
    assert algorithm.displayName() == "Map settlement density and local climate zones"
    assert not algorithm.icon().isNull() and not plugin.provider.icon().isNull()

    # A second plugin object can come and go; unloading removes exactly its own provider.
    other = urbanmtl.classFactory(None)
    plugin.unload()
    assert registry.providerById("urbanmtl") is None
    other.initGui()                      # the desktop path: initGui registers the provider too
    assert registry.algorithmById(ALGORITHM_ID) is not None
    other.unload()
    assert registry.providerById("urbanmtl") is None and registry.algorithmById(ALGORITHM_ID) is None
    plugin.initProcessing()              # restore the session's provider for the other tests
    assert registry.providerById("urbanmtl") is plugin.provider


def test_algorithm_parameters(plugin):
    from qgis.core import (
        QgsApplication,
        QgsProcessingParameterBand,
        QgsProcessingParameterDefinition,
        QgsProcessingParameterEnum,
        QgsProcessingParameterFileDestination,
        QgsProcessingParameterRasterDestination,
    )

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM_ID)
    names = {p.name() for p in algorithm.parameterDefinitions()}
    assert {"INPUT", "BANDS", "EXTENT", "MODEL", "TILE_SIZE", "OVERLAP", "DEVICE", "OUTPUT_HSE", "OUTPUT_LCZ",
            "OUTPUT_CONFIDENCE", "OUTPUT_STATS"} <= names

    bands = algorithm.parameterDefinition("BANDS")
    assert isinstance(bands, QgsProcessingParameterBand)
    assert bands.allowMultiple() and bands.parentLayerParameterName() == "INPUT"
    optional = QgsProcessingParameterDefinition.FlagOptional
    for name in ("BANDS", "EXTENT", "MODEL", "OUTPUT_CONFIDENCE", "OUTPUT_STATS"):
        assert algorithm.parameterDefinition(name).flags() & optional, name
    for name in ("INPUT", "OUTPUT_HSE", "OUTPUT_LCZ"):
        assert not algorithm.parameterDefinition(name).flags() & optional, name
    for name in ("OUTPUT_HSE", "OUTPUT_LCZ", "OUTPUT_CONFIDENCE"):
        assert isinstance(algorithm.parameterDefinition(name), QgsProcessingParameterRasterDestination)
        assert algorithm.parameterDefinition(name).defaultFileExtension() == "tif"
    stats = algorithm.parameterDefinition("OUTPUT_STATS")
    assert isinstance(stats, QgsProcessingParameterFileDestination) and "*.csv" in stats.fileFilter()
    assert not algorithm.parameterDefinition("OUTPUT_CONFIDENCE").createByDefault()
    device = algorithm.parameterDefinition("DEVICE")
    assert isinstance(device, QgsProcessingParameterEnum) and len(device.options()) == 3
    # Empty tile size and overlap: the engine takes the model's own tiling (its training window, from its card).
    for name in ("TILE_SIZE", "OVERLAP"):
        assert algorithm.parameterDefinition(name).defaultValue() is None
        assert algorithm.parameterDefinition(name).flags() & QgsProcessingParameterDefinition.FlagOptional

    # The first screen is input, extent and outputs; everything else is under Advanced parameters.
    advanced = QgsProcessingParameterDefinition.FlagAdvanced
    for name in ("BANDS", "MODEL", "TILE_SIZE", "OVERLAP", "DEVICE", "RUNTIME", "BATCH_SIZE", "OFFSET", "COG", "PYTHON"):
        assert algorithm.parameterDefinition(name).flags() & advanced, name
    for name in ("INPUT", "EXTENT", "OUTPUT_HSE", "OUTPUT_LCZ", "OUTPUT_CONFIDENCE", "OUTPUT_STATS"):
        assert not algorithm.parameterDefinition(name).flags() & advanced, name

    help_text = algorithm.shortHelpString()
    for needed in ("built-up fraction", "20 m", "100 m", "LCZ", "offset", "Qiu", "1000705", "pseudo-labels",
                   "README.md", "km&sup2;"):
        assert needed in help_text, needed
    assert "\n" not in help_text, "paragraphs must wrap: no line breaks inside the help text"
    assert "github.com" not in help_text and "km2" not in help_text
    assert algorithm.helpUrl().startswith("file://") and algorithm.helpUrl().endswith("README.md")
    assert (REPO / "README.md").is_file()


def test_processing_dialog_builds_a_widget_for_every_parameter(plugin):
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication, QgsProcessingContext
    from qgis.gui import QgsGui, QgsProcessingGui

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM_ID)
    context = QgsProcessingContext()
    for parameter in algorithm.parameterDefinitions():
        wrapper = QgsGui.processingGuiRegistry().createParameterWidgetWrapper(parameter, QgsProcessingGui.Standard)
        assert wrapper is not None, parameter.name()
        assert wrapper.createWrappedWidget(context) is not None, parameter.name()
        del wrapper
    dialog = AlgorithmDialog(algorithm)
    assert dialog.windowTitle()
    dialog.deleteLater()
    del dialog


def test_band_choice_maps_to_model_order(qgis_app):
    """The i-th chosen band becomes MODEL_BANDS[i]; the engine's resolver then picks exactly those bands."""
    from urbanmtl.core.common.bands import LAYOUTS, MODEL_BANDS, resolve_band_indices
    from urbanmtl.ui.layers import band_mismatches, band_names

    # A EuroSAT file (B8A last) with no band names: choose B2..B8, then band 13 (B8A), then B11 and B12.
    chosen = [2, 3, 4, 5, 6, 7, 8, 13, 11, 12]
    names = band_names(chosen, [None] * 13)
    assert resolve_band_indices(13, bands=names) == [b - 1 for b in chosen]
    eurosat = list(LAYOUTS["EUROSAT"])
    assert [eurosat[b - 1] for b in chosen] == list(MODEL_BANDS)

    # The same file with band names: choosing in file order puts B8A where B11 belongs; that is reported.
    in_file_order = [2, 3, 4, 5, 6, 7, 8, 11, 12, 13]
    conflicts = band_mismatches(in_file_order, eurosat)
    assert "band 11 is named B11 in the file but was chosen as B8A" in conflicts
    assert band_mismatches(chosen, eurosat) == []


@pytest.mark.parametrize("chosen, message", [
    ([1, 2, 3], "exactly 10"),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 9], "chosen twice"),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 14], "do not exist"),
])
def test_bad_band_choice_is_a_clear_error(qgis_app, chosen, message):
    from qgis.core import QgsProcessingException

    from urbanmtl.ui.layers import band_names

    with pytest.raises(QgsProcessingException, match=message):
        band_names(chosen, [None] * 13)


def test_start_up_survives_a_broken_provider(qgis_app, monkeypatch):
    """initProcessing logs the failure to the message log and returns; QGIS start-up goes on."""
    from qgis.core import QgsApplication

    import urbanmtl
    import urbanmtl.ui.provider

    def broken():
        raise RuntimeError("simulated provider failure")

    messages = []
    log = QgsApplication.messageLog()
    log.messageReceived.connect(lambda message, tag, level: messages.append((tag, message)))
    monkeypatch.setattr(urbanmtl.ui.provider, "UrbanMTLProvider", broken)
    instance = urbanmtl.classFactory(None)
    instance.initGui()
    instance.unload()
    assert instance.provider is None
    assert any(tag == "urbanmtl" and "simulated provider failure" in text for tag, text in messages)


def fake_python(folder, blocked: tuple[str, ...]) -> str:
    """An interpreter that behaves like the venv's Python lacking `blocked` (import and find_spec fail)."""
    site = folder / "blocked_site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {blocked!r}
        class Missing(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, Missing())
    """))
    script = folder / "python-without"
    script.write_text(f"#!/bin/sh\nPYTHONPATH={site}:$PYTHONPATH exec {REPO / '.venv' / 'bin' / 'python'} \"$@\"\n")
    script.chmod(0o755)
    return str(script)


QGIS_SCRIPT = """
import os, sys
sys.path.insert(0, PLUGIN_DIR)
sys.path.append(QGIS_PYTHON_PLUGINS)
from qgis.testing import start_app
app = start_app()
from processing.core.Processing import Processing
Processing.initialize()
import processing
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback
import urbanmtl
plugin = urbanmtl.classFactory(None)
plugin.initProcessing()
assert QgsApplication.processingRegistry().algorithmById(ALGORITHM_ID) is not None
print("PROVIDER LOADED")
HEAVY = {"tensorflow", "keras", "rasterio"}

class Feedback(QgsProcessingFeedback):
    def pushInfo(self, text):
        print("INFO:", text)

for run in RUNS:
    try:
        processing.run(ALGORITHM_ID, run, feedback=Feedback())
        print("RESULT: ok")
    except QgsProcessingException as exc:
        print("MESSAGE:", str(exc).replace("\\n", " "))
print("HEAVY MODULES IN QGIS:", sorted(HEAVY & set(sys.modules)))
plugin.unload()
"""


def run_in_fresh_qgis(plugin_dir, runs: list[dict], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `runs` (processing.run parameter dicts) in a new QGIS process: no TensorFlow imported by pytest."""
    script = (f"PLUGIN_DIR = {str(plugin_dir)!r}\nQGIS_PYTHON_PLUGINS = {QGIS_PYTHON_PLUGINS!r}\n"
              f"ALGORITHM_ID = {ALGORITHM_ID!r}\nRUNS = {runs!r}\n" + QGIS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "URBANMTL_PYTHON"}
    env.update(QT_QPA_PLATFORM="offscreen", **env_extra)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("blocked, missing", [
    (("tensorflow", "ai_edge_litert"), "'ai_edge_litert'"),     # neither runtime
    (("rasterio",), "'rasterio'"),
])
def test_missing_packages_give_one_message_naming_install_engine(plugin_dir, tmp_path, blocked, missing):
    """The engine's Python lacks a package: the provider still loads, and running says, in one sentence, what is
    missing and to run Install engine (urbanmtl:install_engine, with its menu entry)."""
    scene = write_geotiff(tmp_path / "scene.tif", synthetic_dn(16, 16, 10), TEN_BANDS)
    run = {"INPUT": str(scene), "OUTPUT_HSE": str(tmp_path / "hse.tif"), "OUTPUT_LCZ": str(tmp_path / "lcz.tif")}
    python = fake_python(tmp_path, blocked)
    done = run_in_fresh_qgis(plugin_dir, [run], {"URBANMTL_PYTHON": python})
    output = done.stdout + done.stderr
    assert "PROVIDER LOADED" in done.stdout, output
    messages = [line for line in done.stdout.splitlines() if line.startswith("MESSAGE:")]
    assert len(messages) == 1, output
    message = messages[0]
    assert missing in message and python in message and "urbanmtl:install_engine" in message, output
    assert "Raster > urbanmtl" in message, output
    assert "Traceback" not in output, output
    assert not (tmp_path / "hse.tif").exists() and not (tmp_path / "lcz.tif").exists()


def test_a_mapping_python_needs_one_runtime_and_training_needs_tensorflow(plugin_dir):
    from urbanmtl.ui import interpreter

    litert_only = interpreter.ProbeResult("3.11.2", ["tensorflow", "keras", "sklearn"])
    assert litert_only.missing("mapping") == []
    assert litert_only.missing("training") == ["tensorflow", "keras", "sklearn"]
    assert interpreter.ProbeResult("3.11.2", ["ai_edge_litert"]).missing("mapping") == []
    assert interpreter.ProbeResult("3.11.2", ["ai_edge_litert", "tensorflow"]).missing() == ["ai_edge_litert"]
    own = interpreter.Interpreter("/usr/bin/python3", "QGIS's own Python", {}, "/p/urbanmtl/engine-py3.11")
    message = interpreter.missing_message(own, ["tensorflow"], "training")
    assert "urbanmtl:install_engine" in message and "Also install what training needs" in message
    assert "/p/urbanmtl/engine-py3.11" in message and "\n" not in message


def test_engine_never_enters_the_qgis_process(plugin_dir, tiny_model, tmp_path):
    """A real run from a fresh QGIS process: the maps are written, TensorFlow and rasterio stay in the child."""
    scene = write_geotiff(tmp_path / "scene.tif", synthetic_dn(40, 48, 10), TEN_BANDS)
    run = {"INPUT": str(scene), "MODEL": str(tiny_model), "TILE_SIZE": 32, "OVERLAP": 8, "DEVICE": 1,
           "OUTPUT_HSE": str(tmp_path / "hse.tif"), "OUTPUT_LCZ": str(tmp_path / "lcz.tif")}
    done = run_in_fresh_qgis(plugin_dir, [run], {})
    output = done.stdout + done.stderr
    assert "RESULT: ok" in done.stdout, output
    assert "HEAVY MODULES IN QGIS: []" in done.stdout, output
    assert (tmp_path / "hse.tif").is_file() and (tmp_path / "lcz.tif").is_file()
    info = "\n".join(line for line in done.stdout.splitlines() if line.startswith("INFO:"))
    # The log states input, engine, device, tile count, time and km² mapped, and never says km2.
    assert f"Input: {scene}" in info and ".venv/bin/python" in info, info
    assert "on CPU" in info and "4 tiles in" in info and "km² of" in info and "km2" not in info, info
