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
    "name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository",
    "tracker", "homepage", "tags", "category", "icon", "experimental", "hasProcessingProvider", "license",
)


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
        assert metadata[url].startswith("https://")


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
    assert algorithm.parameterDefinition("TILE_SIZE").defaultValue() == 256
    assert algorithm.parameterDefinition("OVERLAP").defaultValue() == 32

    help_text = algorithm.shortHelpString()
    for needed in ("10000", "offset", "20 m", "100 m", "pseudo-labels", "Qiu", "1000705", "pip install"):
        assert needed in help_text, needed


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
    from urbanmtl.core.bands import LAYOUTS, MODEL_BANDS, resolve_band_indices
    from urbanmtl.ui.algorithm import band_mismatches, band_names

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

    from urbanmtl.ui.algorithm import band_names

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


BLOCK_MODULES = """
import importlib.abc, sys

class Missing(importlib.abc.MetaPathFinder):
    # Behaves like a QGIS whose Python lacks these packages.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
"""


@pytest.mark.parametrize("blocked, expected", [
    (("tensorflow", "keras", "tf_keras"), ("TensorFlow", "pip install", "tensorflow==2.19.*", "numpy<2")),
    (("rasterio",), ("rasterio", "'rasterio'", "install")),
])
def test_provider_loads_and_explains_missing_packages(plugin_dir, tmp_path, blocked, expected):
    """Without TensorFlow or rasterio the provider still loads; running says what to install."""
    scene = write_geotiff(tmp_path / "scene.tif", synthetic_dn(16, 16, 10), TEN_BANDS)
    script = f"BLOCKED = {blocked!r}\n" + BLOCK_MODULES + textwrap.dedent(f"""
        sys.path.insert(0, {str(plugin_dir)!r})
        sys.path.append({QGIS_PYTHON_PLUGINS!r})
        from qgis.testing import start_app
        app = start_app()
        from processing.core.Processing import Processing
        Processing.initialize()
        import processing
        from qgis.core import QgsApplication, QgsProcessingException
        import urbanmtl
        plugin = urbanmtl.classFactory(None)
        plugin.initProcessing()
        assert QgsApplication.processingRegistry().algorithmById({ALGORITHM_ID!r}) is not None
        assert not set(sys.modules) & {{"tensorflow", "keras", "rasterio"}}, "loaded too early"
        print("PROVIDER LOADED")
        try:
            processing.run({ALGORITHM_ID!r}, {{"INPUT": {str(scene)!r},
                           "OUTPUT_HSE": {str(tmp_path / "hse.tif")!r}, "OUTPUT_LCZ": {str(tmp_path / "lcz.tif")!r}}})
        except QgsProcessingException as exc:
            print("MESSAGE:", str(exc).replace("\\n", " "))
        plugin.unload()
    """)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    output = done.stdout + done.stderr
    assert "PROVIDER LOADED" in done.stdout, output
    message = next((line for line in done.stdout.splitlines() if line.startswith("MESSAGE:")), "")
    for needed in expected:
        assert needed in message, output
    assert any(f"'{name}'" in message for name in blocked), output     # names the package that is missing
    assert not (tmp_path / "hse.tif").exists() and not (tmp_path / "lcz.tif").exists()
