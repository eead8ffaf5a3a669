"""Processing algorithm urbanmtl:train_from_polygons: fine-tune the LCZ model on training areas drawn by the user.

Like urbanmtl:map_hse_lcz it runs the engine in a child process (`python -m core.finetune_worker`, see
ui/engine.py for why TensorFlow never enters QGIS) and reads its JSON lines. The result is a run folder whose
model.keras is the MODEL_PATH output, ready for the mapping algorithm's Model parameter (also in the Graphical
Modeler), and whose accuracy.html (REPORT) says, on polygons held out from training, whether it got better.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputHtml,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication, QUrl

from ..core.common.run_folder import remove_stopped_run
from ..core.common import spec
from ..core.common.spec import DEFAULT_DISTILL, MAX_EPOCHS
from .algorithm_base import UrbanmtlAlgorithm
from .help import README_PATH
from .layers import chosen_bands, layer_file
from .run_engine import run_engine, user_text

#: The README section this algorithm's help links to.
README_SECTION = "train-on-your-own-city"
#: Vector formats the engine reads directly (GDAL/OGR through fiona); anything else is copied to a GeoPackage.
POLYGON_FORMATS = ["gpkg", "shp", "geojson", "json", "kml", "kmz", "sqlite", "fgb", "gml"]
#: Files whose folders name their classes (WUDAPT, LCZ Generator): read whole when no field is chosen.
FOLDER_FORMATS = (".kml", ".kmz")


def tr(text: str) -> str:
    return QCoreApplication.translate("TrainFromPolygonsAlgorithm", text)


def help_html() -> str:
    """The help panel: short paragraphs for a map user, one line each so that they wrap."""
    readme = QUrl.fromLocalFile(README_PATH).toString() + "#" + README_SECTION
    paragraphs = [
        tr("Teaches the local climate zone (LCZ) model your city. Draw <b>training areas</b> over the Sentinel-2 "
           "image the way WUDAPT does: polygons of a few hundred metres (at least 300 m across is best) that each "
           "hold one LCZ, with the class in a field. Draw at least two polygons of every class you use, and "
           "better five or more, spread over the city; the polygons may be in any CRS."),
        tr("<b>Classes</b>: 1&ndash;10 for the built types and A&ndash;G for land cover, written as letters "
           "(A&ndash;G), as 11&ndash;17, or as the WUDAPT/UMEP codes 101&ndash;107. A selection or a temporary "
           "layer is used as it is; only selected polygons are used when you tick 'Selected features only'."),
        tr("Inside and near your areas, your class wins. Elsewhere the model keeps its own map, except where "
           "your areas contradict it (if it calls your compact midrise 'open midrise', it does so everywhere). "
           "The <b>weight</b> of its own map (advanced, default 1) can be lowered towards 0 to let your areas "
           "decide alone. Only the LCZ part of the model learns: the settlement density map does not change."),
        tr("About 30&nbsp;% of the polygons of each class are <b>held out</b>: the model never trains on them, "
           "and the original model, the trained model and a <b>random forest</b> trained on the same areas the "
           "way the WUDAPT LCZ Generator does are all scored on them. The <b>report</b> (opens in the Results "
           "viewer) gives their overall accuracy, the accuracy of built versus natural, kappa, the F1 of every "
           "class with its uncertainty, the confusion matrices, and a warning for any class whose areas the "
           "trained map still calls something else."),
        tr("The <b>trained model</b> is model.keras in the output folder, trained after the test on all your "
           "polygons, test polygons included: give it as the Model of 'Map settlement "
           "density and local climate zones' (in the Graphical Modeler, connect this output to it). "
           "<b>Epochs</b> 0 chooses the training length automatically. More: "
           "<a href=\"{url}\">Train on your own city</a> in the plugin's README.").format(url=readme),
    ]
    return "".join(f"<p>{p}</p>" for p in paragraphs)


class ModelParameter(QgsProcessingParameterFile):
    """A file parameter that also takes a folder: a training run folder is a model too (its model.keras).
    QGIS 3.22 checks that a file parameter's value is an existing file."""

    def clone(self) -> "ModelParameter":
        copy = ModelParameter(self.name(), self.description(), self.behavior(), self.extension(),
                              self.defaultValue(), self.flags() & QgsProcessingParameterDefinition.FlagOptional,
                              self.fileFilter())
        copy.setFlags(self.flags())
        return copy

    def checkValueIsAcceptable(self, value: Any, context: Optional[QgsProcessingContext] = None) -> bool:
        if isinstance(value, str) and value.strip() and os.path.isdir(os.path.expanduser(value.strip())):
            return True
        return super().checkValueIsAcceptable(value, context)


class TrainFromPolygonsAlgorithm(UrbanmtlAlgorithm):
    """Fine-tune the LCZ model on LCZ training areas and score it on held-out areas."""

    INPUT = "INPUT"
    POLYGONS = "POLYGONS"
    FIELD = "FIELD"
    MODEL = "MODEL"
    EPOCHS = "EPOCHS"
    DISTILL = "DISTILL"
    BANDS = "BANDS"
    OFFSET = "OFFSET"
    PYTHON = "PYTHON"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    MODEL_PATH = "MODEL_PATH"
    REPORT = "REPORT"
    OA_BEFORE = "OA_BEFORE"
    OA_AFTER = "OA_AFTER"
    OA_FOREST = "OA_FOREST"

    README_SECTION = README_SECTION

    def name(self) -> str:
        return "train_from_polygons"

    def displayName(self) -> str:
        return self.tr("Train LCZ model from training areas")

    def tags(self) -> list[str]:
        return self.tr("lcz,local climate zones,wudapt,training areas,fine-tuning,train,accuracy,sentinel-2,"
                       "deep learning").split(",")

    def shortHelpString(self) -> str:
        return help_html()

    def initAlgorithm(self, config: Optional[dict[str, Any]] = None) -> None:
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Sentinel-2 image")))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.POLYGONS, tr("Training areas (polygons)"), [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            self.FIELD, tr("Field holding the LCZ class (1-10, A-G, 11-17 or 101-107; empty for a WUDAPT KML/KMZ "
                           "with one folder per class)"), None, self.POLYGONS, optional=True))
        self.addParameter(ModelParameter(
            self.MODEL, tr("Model to start from (.keras or a training run folder; empty = the bundled model)"),
            QgsProcessingParameterFile.File, extension="", optional=True, fileFilter=tr("Keras models (*.keras)")))
        self.addParameter(QgsProcessingParameterNumber(
            self.EPOCHS, tr("Epochs (0 = automatic)"), QgsProcessingParameterNumber.Integer, 0, optional=True,
            minValue=0, maxValue=MAX_EPOCHS))
        advanced = [
            QgsProcessingParameterNumber(
                self.DISTILL, tr("Weight of the start model's own map away from your areas (0 = your areas alone)"),
                QgsProcessingParameterNumber.Double, DEFAULT_DISTILL, optional=True, minValue=0.0, maxValue=10.0),
            QgsProcessingParameterBand(
                self.BANDS, tr("Bands {order}, in this order (empty = from band names or count)").format(
                    order=", ".join(spec.MODEL_BANDS)),
                None, self.INPUT, optional=True, allowMultiple=True),
            QgsProcessingParameterNumber(
                self.OFFSET, tr("DN offset to use instead of the product metadata's (e.g. -1000)"),
                QgsProcessingParameterNumber.Double, None, optional=True, minValue=-spec.DN_SCALE,
                maxValue=spec.DN_SCALE),
            QgsProcessingParameterFile(
                self.PYTHON,
                tr("Python interpreter with TensorFlow (empty = QGIS's own, with Install engine's training "
                   "packages; a choice is remembered)"),
                QgsProcessingParameterFile.File, extension="", optional=True,
                fileFilter=tr("Python interpreters (python*);;All files (*)")),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT_FOLDER, tr("Output folder (new or empty)")))
        self.addOutput(QgsProcessingOutputFile(self.MODEL_PATH, tr("Trained model (model.keras)")))
        self.addOutput(QgsProcessingOutputHtml(self.REPORT, tr("Accuracy report")))
        self.addOutput(QgsProcessingOutputNumber(self.OA_BEFORE, tr("Overall accuracy before training")))
        self.addOutput(QgsProcessingOutputNumber(self.OA_AFTER, tr("Overall accuracy after training")))
        self.addOutput(QgsProcessingOutputNumber(
            self.OA_FOREST, tr("Overall accuracy of a random forest on the same areas (LCZ Generator's method)")))

    def _polygons(self, parameters: dict[str, Any], context: QgsProcessingContext,
                  feedback: QgsProcessingFeedback) -> tuple[str, Optional[str]]:
        """(file, layer name or None) of the training areas: the layer's own file when the engine can read it
        as it is, else (a memory layer, a selection, a filtered or non-file layer) a temporary GeoPackage."""
        source = self.parameterAsSource(parameters, self.POLYGONS, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.POLYGONS))
        if source.featureCount() == 0:
            raise QgsProcessingException(self.tr(
                "The training areas layer holds no polygons (or none is selected). Draw LCZ training areas and "
                "choose the field holding their class."))
        path, layer_name = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, self.POLYGONS, context, POLYGON_FORMATS, "gpkg", feedback)
        if not path:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.POLYGONS))
        return path, layer_name or None

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        image = layer_file(layer)
        field = self.parameterAsString(parameters, self.FIELD, context)
        polygons, polygon_layer = self._polygons(parameters, context, feedback)
        if not field:
            if not polygons.lower().endswith(FOLDER_FORMATS):
                raise QgsProcessingException(self.tr(
                    "No field chosen: choose the field of the training areas that holds the LCZ class (only a "
                    "KML/KMZ file can give the classes by its folders, the WUDAPT way)."))
            polygon_layer = None          # every folder of the file: each is one class
        out = self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context)
        epochs = self.parameterAsInt(parameters, self.EPOCHS, context) if parameters.get(self.EPOCHS) not in (
            None, "") else 0
        params = {
            "image": image, "polygons": polygons, "field": field or None, "out": out,
            "model": self.parameterAsFile(parameters, self.MODEL, context) or None,
            "epochs": epochs or None, "layer": polygon_layer,
            "bands": chosen_bands(self.parameterAsInts(parameters, self.BANDS, context), layer, feedback.pushWarning),
            "offset": None if parameters.get(self.OFFSET) in (None, "")
            else self.parameterAsDouble(parameters, self.OFFSET, context),
            "distill": None if parameters.get(self.DISTILL) in (None, "")
            else self.parameterAsDouble(parameters, self.DISTILL, context),
        }
        feedback.pushInfo(self.tr("Input: {image}").format(image=image))
        feedback.pushInfo(self.tr("Training areas: {polygons}{layer}, {field}").format(
            polygons=polygons, layer=f" (layer {polygon_layer})" if polygon_layer else "",
            field=self.tr("field '{field}'").format(field=field) if field else self.tr("one folder per class")))
        feedback.pushInfo(self.tr("Epochs: {epochs}").format(
            epochs=epochs or self.tr("automatic")))
        result = run_engine(params, self.parameterAsFile(parameters, self.PYTHON, context), feedback,
                            module="core.finetune_worker",
                            cleanup=lambda: remove_stopped_run(out))
        self._report(result, feedback)
        return {
            self.OUTPUT_FOLDER: out,
            self.MODEL_PATH: result.get("model") or str(Path(out) / "model.keras"),
            self.REPORT: result.get("report") or str(Path(out) / "accuracy.html"),
            self.OA_BEFORE: float(result["before"]["oa"]),
            self.OA_AFTER: float(result["after"]["oa"]),
            self.OA_FOREST: float(result["forest"]["oa"]),
        }

    def _report(self, result: dict[str, Any], feedback: QgsProcessingFeedback) -> None:
        """The run's summary: polygons, epochs and time, then the held-out accuracy of the start model, the
        fine-tuned model and the random forest, and the warnings."""
        before, after, forest = result["before"], result["after"], result["forest"]
        feedback.pushInfo(self.tr(
            "Trained {epochs} epochs on {n_train} polygons ({n_test} held out for testing) in {seconds} s on "
            "{device}.").format(epochs=result.get("epochs", "?"), n_train=result.get("n_train", "?"),
                                n_test=result.get("n_test", "?"), seconds=f"{float(result.get('seconds') or 0):.0f}",
                                device=result.get("device", "?")))
        feedback.pushInfo(self.tr(
            "Overall accuracy on the held-out polygons ({cells} cells of 100 m): {before} -> {after} ({gain}); "
            "built vs natural {bu_before} -> {bu_after}; kappa {k_before} -> {k_after}.").format(
            cells=result.get("test_cells", "?"), before=f"{before['oa']:.3f}", after=f"{after['oa']:.3f}",
            gain=f"{after['oa'] - before['oa']:+.3f}", bu_before=f"{before['oa_bu']:.3f}",
            bu_after=f"{after['oa_bu']:.3f}", k_before=f"{before['kappa']:.3f}", k_after=f"{after['kappa']:.3f}"))
        feedback.pushInfo(self.tr(
            "A random forest trained on the same areas the LCZ Generator's way: overall accuracy {oa}, built vs "
            "natural {bu}, kappa {kappa} on the same held-out polygons.").format(
            oa=f"{forest['oa']:.3f}", bu=f"{forest['oa_bu']:.3f}", kappa=f"{forest['kappa']:.3f}"))
        ci = result.get("oa_gain_95")
        if ci:
            feedback.pushInfo(self.tr("95 % interval of the gain (bootstrap over the test polygons): {low} to "
                                      "{high}.").format(low=f"{ci[0]:+.3f}", high=f"{ci[1]:+.3f}"))
        refit = result.get("refit")
        if refit:
            feedback.pushInfo(self.tr(
                "Then the final model was trained the same way on all {n} polygons, test polygons included "
                "({epochs} epochs): the figures above measure the procedure.").format(
                n=refit["polygons"], epochs=refit["epochs"]))
        for warning in result.get("warnings") or []:
            feedback.pushWarning(self.tr("Warning: {text}").format(text=warning))
        feedback.pushInfo(user_text(self.tr(
            "Report: {report}. Trained model: {model} - give it as the Model of 'Map settlement density and local "
            "climate zones'.").format(report=result.get("report"), model=result.get("model"))))
