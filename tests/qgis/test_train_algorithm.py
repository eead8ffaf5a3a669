"""urbanmtl:train_from_polygons through processing.run, for what qgis_process cannot give it: a selection of a
memory layer as training areas, and Cancel in the middle of training (the run folder is removed, the next run
into it is not blocked)."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

pytestmark = pytest.mark.qgis

ALGORITHM_ID = "urbanmtl:train_from_polygons"


@pytest.fixture(scope="module")
def city(plugin, tmp_path_factory):
    """The crop of a real city and its training squares labelled from the teacher (tests/e2e)."""
    from tests.e2e import test_train_from_polygons as e2e

    if not e2e._available():
        pytest.skip("../shared/data/cities is not available")
    import rasterio

    folder = tmp_path_factory.mktemp("train_qgis")
    image = e2e.crop_city(folder / "crop.tif")
    with rasterio.open(image) as src:
        crs = src.crs
    squares = e2e.teacher_squares(image)
    classes = [code for code, _ in Counter(c for c, _ in squares).most_common(2)]
    chosen = []
    for code in classes:
        chosen += [(e2e.letter(code), g) for c, g in squares if c == code][:e2e.PER_CLASS]
    return {"image": image, "crs": crs, "squares": chosen}


def memory_layer(squares, crs, extra_bad: int = 0):
    """A memory layer (EPSG:4326) of the squares, plus `extra_bad` squares whose class 'X' is not an LCZ."""
    from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsVectorLayer
    from rasterio.warp import transform_geom

    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=lcz:string(10)", "training areas", "memory")
    features = []
    for value, geometry in squares + [("X", squares[i][1]) for i in range(extra_bad)]:
        ring = transform_geom(crs, "EPSG:4326", geometry)["coordinates"][0]
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt("POLYGON((" + ", ".join(f"{x} {y}" for x, y in ring) + "))"))
        feature.setAttribute("lcz", value)
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    QgsProject.instance().addMapLayer(layer)
    return layer


def test_a_selection_of_a_memory_layer_is_what_is_trained_on(city, tiny_model, tmp_path):
    import processing
    from qgis.core import QgsProcessingFeatureSourceDefinition, QgsProject

    layer = memory_layer(city["squares"], city["crs"], extra_bad=2)
    try:
        good = [f.id() for f in layer.getFeatures() if f["lcz"] != "X"]
        layer.selectByIds(good)
        out = tmp_path / "run"
        result = processing.run(ALGORITHM_ID, {
            "INPUT": str(city["image"]), "POLYGONS": QgsProcessingFeatureSourceDefinition(layer.id(), True),
            "FIELD": "lcz", "MODEL": str(tiny_model), "EPOCHS": 1, "BANDS": list(range(1, 11)),
            "OUTPUT_FOLDER": str(out)})
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    # The two unselected polygons (class 'X') were left out, or the run would have failed on them.
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert accuracy["split"]["n_train"] + accuracy["split"]["n_test"] == len(good) == 6
    assert accuracy["settings"]["polygons"].endswith(".gpkg")      # the selection, copied to a GeoPackage
    # BANDS (Advanced) reaches the engine as one name per band of the file, as in the mapping algorithm.
    assert accuracy["settings"]["bands"] == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
    assert result["MODEL_PATH"] == str(out / "model.keras") and (out / "model.keras").is_file()
    assert result["REPORT"] == str(out / "accuracy.html") and result["OUTPUT_FOLDER"] == str(out)
    assert result["OA_BEFORE"] == pytest.approx(accuracy["before"]["oa"])
    assert result["OA_AFTER"] == pytest.approx(accuracy["after"]["oa"])
    assert result["OA_FOREST"] == pytest.approx(accuracy["forest"]["oa"])


def test_a_wrong_band_choice_is_refused_before_any_work(city, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    from tests.e2e.test_train_from_polygons import write_areas

    areas = tmp_path / "areas.gpkg"
    write_areas(areas, city["squares"], city["crs"])
    out = tmp_path / "run"
    with pytest.raises(QgsProcessingException,
                       match="Bands: 3 band\\(s\\) were chosen, but the model needs exactly 10"):
        processing.run(ALGORITHM_ID, {"INPUT": str(city["image"]), "POLYGONS": str(areas), "FIELD": "lcz",
                                      "BANDS": [1, 2, 3], "OUTPUT_FOLDER": str(out)})
    assert not out.exists()


def test_cancel_during_training_removes_the_run_folder(city, tiny_model, tmp_path):
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from tests.e2e.test_train_from_polygons import write_areas
    from urbanmtl.core.finetuning.setup import PROGRESS_STEPS

    areas = tmp_path / "areas.gpkg"
    write_areas(areas, city["squares"], city["crs"])
    out = tmp_path / "run"
    feedback = QgsProcessingFeedback()
    cancelled_at = []

    def cancel_in_training(percent: float) -> None:
        if percent > PROGRESS_STEPS["training"][0] and not cancelled_at:
            cancelled_at.append(time.monotonic())
            feedback.cancel()

    feedback.progressChanged.connect(cancel_in_training)
    parameters = {"INPUT": str(city["image"]), "POLYGONS": str(areas), "FIELD": "lcz", "MODEL": str(tiny_model),
                  "EPOCHS": 50, "OUTPUT_FOLDER": str(out)}
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        processing.run(ALGORITHM_ID, parameters, feedback=feedback)
    assert cancelled_at, "no progress was reported during training"
    assert time.monotonic() - cancelled_at[0] < 3.0
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


def test_dialog_parameters_outputs_and_help(plugin, tmp_path):
    """Every parameter gets its widget; MODEL takes a .keras file or a run folder; the outputs the Graphical
    Modeler chains (the model file into the mapping algorithm's Model) and the Results viewer opens (the report)."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import (
        QgsApplication, QgsProcessingContext, QgsProcessingOutputFile, QgsProcessingOutputHtml,
        QgsProcessingOutputNumber, QgsProcessingParameterDefinition,
    )
    from qgis.gui import QgsGui, QgsProcessingGui

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM_ID)
    assert algorithm is not None and algorithm.displayName() == "Train LCZ model from training areas"
    context = QgsProcessingContext()
    for parameter in algorithm.parameterDefinitions():
        wrapper = QgsGui.processingGuiRegistry().createParameterWidgetWrapper(parameter, QgsProcessingGui.Standard)
        assert wrapper is not None and wrapper.createWrappedWidget(context) is not None, parameter.name()
        del wrapper
    dialog = AlgorithmDialog(algorithm)
    assert dialog.windowTitle()
    dialog.deleteLater()
    del dialog

    model = algorithm.parameterDefinition("MODEL")
    (tmp_path / "model.keras").write_bytes(b"x")
    assert model.checkValueIsAcceptable(str(tmp_path)) and model.checkValueIsAcceptable(str(tmp_path / "model.keras"))
    assert not model.checkValueIsAcceptable(str(tmp_path / "weights.h5"))        # neither .keras nor a folder
    assert model.checkValueIsAcceptable(None) and model.flags() & QgsProcessingParameterDefinition.FlagOptional
    assert model.clone().checkValueIsAcceptable(str(tmp_path))
    assert algorithm.parameterDefinition("EPOCHS").defaultValue() == 0
    distill = algorithm.parameterDefinition("DISTILL")
    assert distill.defaultValue() == 1.0 and distill.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    outputs = {o.name(): o for o in algorithm.outputDefinitions()}
    assert isinstance(outputs["MODEL_PATH"], QgsProcessingOutputFile)
    assert isinstance(outputs["REPORT"], QgsProcessingOutputHtml)
    assert isinstance(outputs["OA_BEFORE"], QgsProcessingOutputNumber) and "OUTPUT_FOLDER" in outputs
    assert isinstance(outputs["OA_FOREST"], QgsProcessingOutputNumber)
    help_text = algorithm.shortHelpString()
    assert "\n" not in help_text and "WUDAPT" in help_text and "101&ndash;107" in help_text
    assert "#train-on-your-own-city" in help_text and algorithm.helpUrl().endswith("README.md#train-on-your-own-city")


def test_the_progress_bar_says_how_long_is_left(plugin):
    """The engine's progress turned into the text under the progress bar: nothing while too little is done to
    tell, then minutes, then seconds, each said once."""
    from qgis.core import QgsProcessingFeedback

    from urbanmtl.ui.run_engine import Remaining, _show

    class Recorder(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.texts = []

        def setProgressText(self, text):
            self.texts.append(text)

    now = [0.0]
    remaining = Remaining(clock=lambda: now[0])
    feedback = Recorder()
    for seconds, percent in ((1, 1.0), (12, 10.0), (13, 10.5), (60, 50.0), (100, 90.0), (101, 100.0)):
        now[0] = seconds
        _show({"event": "progress", "percent": percent}, feedback, {}, remaining)
    assert feedback.progress() == 100.0
    assert feedback.texts == ["about 2 min left", "about 1 min left", "about 10 s left", ""]
