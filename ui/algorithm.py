"""Processing algorithm urbanmtl:map_hse_lcz: a QGIS front end that runs the engine in a child process.

TensorFlow never enters the QGIS process (see ui/engine.py for why): the parameters go to
`python -m core.worker` in QGIS's own Python or a configured one (ui.run_engine), and its JSON lines come back as
progress, log messages and the result. This module holds the algorithm's parameters and what it does with
them; its help text is ui.help, the input layer's bands and file ui.layers. It imports only light engine
modules (core.common.spec, the contract; core.common.bands), never TensorFlow.
"""

from __future__ import annotations

from typing import Any, Optional

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsRasterLayer,
)

from ..core.common import spec
from ..core.common.product_names import is_product_name, product_label
from ..core.common.spec import MODEL_BANDS
from . import styles
from .algorithm_base import UrbanmtlAlgorithm
from .help import help_html
from .layers import chosen_bands, layer_file
from .run_engine import run_engine

#: DEVICE enum index -> PredictOptions.device (QGIS 3.22 enums pass the index, not the text).
DEVICES: tuple[str, ...] = spec.DEVICES
#: RUNTIME enum index -> PredictOptions.runtime.
RUNTIMES: tuple[str, ...] = spec.RUNTIMES
#: MAJORITY enum index -> majority filter size (0 = off).
MAJORITY_SIZES: tuple[int, ...] = spec.MAJORITY_SIZES

#: File endings the engine's GeoTIFF writer is honest about.
RASTER_EXTENSIONS: tuple[str, ...] = spec.RASTER_SUFFIXES


class MapHseLczAlgorithm(UrbanmtlAlgorithm):
    """Map settlement density and local climate zones from a Sentinel-2 image."""

    INPUT = "INPUT"
    BANDS = "BANDS"
    EXTENT = "EXTENT"
    MODEL = "MODEL"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    RUNTIME = "RUNTIME"
    COG = "COG"
    OFFSET = "OFFSET"
    PYTHON = "PYTHON"
    OUTPUT_HSE = "OUTPUT_HSE"
    OUTPUT_LCZ = "OUTPUT_LCZ"
    OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"
    OUTPUT_STATS = "OUTPUT_STATS"
    OUTPUT_LCZ_UMEP = "OUTPUT_LCZ_UMEP"
    OUTPUT_LCZ_W2W = "OUTPUT_LCZ_W2W"
    MAJORITY = "MAJORITY"

    def name(self) -> str:
        return "map_hse_lcz"

    def displayName(self) -> str:
        return self.tr("Map settlement density and local climate zones")

    def tags(self) -> list[str]:
        return self.tr("sentinel-2,settlement,hse,built-up,lcz,local climate zones,urban,deep learning,"
                       "classification").split(",")

    def shortHelpString(self) -> str:
        return help_html()

    def initAlgorithm(self, config: Optional[dict[str, Any]] = None) -> None:
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Sentinel-2 image")))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, tr("Extent to map (empty = the whole image)"), optional=True))
        for parameter in self._advanced_parameters():
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self._add_outputs()

    def _advanced_parameters(self) -> list:
        """Band choice, model, tiling, device, runtime, batch size, DN offset, COG, majority filter, Python: the dialog's
        Advanced Parameters, in this order."""
        tr = self.tr
        return [
            QgsProcessingParameterBand(
                self.BANDS, tr("Bands {order}, in this order (empty = from band names or count)").format(
                    order=", ".join(MODEL_BANDS)),
                None, self.INPUT, optional=True, allowMultiple=True),
            QgsProcessingParameterFile(
                self.MODEL, tr("Model (.keras; empty = the bundled model)"), QgsProcessingParameterFile.File,
                extension="", optional=True, fileFilter=tr("Keras models (*.keras)")),
            # Empty = the engine's tiling for the model (core.tiling.model_tiling: 512 px tiles overlapping by 32
            # for the bundled model, whose attention pools over its training window).
            QgsProcessingParameterNumber(
                self.TILE_SIZE, tr("Tile size ({gsd} m pixels, multiple of {multiple}; empty = the engine's for the "
                                   "model)").format(gsd=spec.INPUT_GSD_M, multiple=spec.SIZE_MULTIPLE),
                QgsProcessingParameterNumber.Integer, None, optional=True, minValue=spec.MIN_TILE_SIZE,
                maxValue=4096),
            QgsProcessingParameterNumber(
                self.OVERLAP, tr("Tile overlap (10 m pixels on each side; empty = the engine's for the model)"),
                QgsProcessingParameterNumber.Integer, None, optional=True, minValue=0, maxValue=1024),
            QgsProcessingParameterEnum(
                self.DEVICE, tr("Compute on"),
                [tr("Automatic (GPU if TensorFlow sees one, else CPU)"), tr("CPU"), tr("GPU")], defaultValue=0),
            QgsProcessingParameterEnum(
                self.RUNTIME, tr("Network runtime"),
                [tr("Automatic (LiteRT on the CPU where the model has a LiteRT file, else TensorFlow)"),
                 tr("LiteRT (CPU)"), tr("TensorFlow")], defaultValue=0),
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, tr("Tiles per batch (empty = as many as make {pixels} pixels, at least 1)").format(
                    pixels=spec.BATCH_PIXELS), QgsProcessingParameterNumber.Integer, None, optional=True,
                minValue=1, maxValue=256),
            QgsProcessingParameterNumber(
                self.OFFSET, tr("DN offset to use instead of the product metadata's (e.g. -1000)"),
                QgsProcessingParameterNumber.Double, None, optional=True, minValue=-spec.DN_SCALE,
                maxValue=spec.DN_SCALE),
            QgsProcessingParameterBoolean(self.COG, tr("Write Cloud Optimized GeoTIFFs"), False),
            QgsProcessingParameterEnum(
                self.MAJORITY, tr("Majority filter of the LCZ map (also applied to its exports)"),
                [tr("Off"), tr("3x3 cells"), tr("5x5 cells")], defaultValue=0),
            QgsProcessingParameterFile(
                self.PYTHON,
                tr("Python interpreter for the engine (empty = QGIS's own, with Install engine's packages; a choice "
                   "is remembered)"),
                QgsProcessingParameterFile.File, extension="", optional=True,
                # "*.*" would ask for a file name ending, which /usr/bin/python3 has not.
                fileFilter=tr("Python interpreters (python*);;All files (*)")),
        ]

    def _add_outputs(self) -> None:
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_HSE, tr("Settlement density (HSE, 20 m)")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_LCZ, tr("Local climate zones (LCZ, 100 m)")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_CONFIDENCE, tr("LCZ confidence (100 m)"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_STATS, tr("Area statistics per LCZ class (CSV)"), tr("CSV files (*.csv)"), optional=True,
            createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_LCZ_UMEP, tr("LCZ in UMEP codes (1-10, 101-107)"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_LCZ_W2W, tr("LCZ for WRF w2w (EPSG:4326)"), optional=True, createByDefault=False))

    def checkParameterValues(self, parameters: dict[str, Any], context: QgsProcessingContext) -> tuple[bool, str]:
        """As Processing checks them, but a Sentinel-2 product named the QGIS way (a SENTINEL2 subdataset, a /vsizip/
        path, a .SAFE folder or .zip: core.common.product_names), which QGIS 3.22 cannot load from a string, is
        taken as it is: the engine opens the whole product."""
        if not is_product_name(self._input_text(parameters)):
            return super().checkParameterValues(parameters, context)
        for definition in self.parameterDefinitions():
            name = definition.name()
            if name != self.INPUT and not definition.checkValueIsAcceptable(parameters.get(name), context):
                return False, self.tr("Incorrect parameter value for {name}").format(name=definition.description())
        return True, ""

    def _input_text(self, parameters: dict[str, Any]) -> str:
        value = parameters.get(self.INPUT)
        return value if isinstance(value, str) else ""

    def _input(self, parameters: dict[str, Any], context: QgsProcessingContext,
               feedback: QgsProcessingFeedback) -> tuple[str, Optional[QgsRasterLayer], str, Optional[list[str]]]:
        """(what the engine opens, the input layer or None, its name, the band names chosen). A product named the
        QGIS way goes to the engine whole, its bands from the product: a 10 m subdataset layer shows 4 of them."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        text = layer_file(layer) if layer is not None and layer.isValid() else self._input_text(parameters)
        if is_product_name(text):
            if self.parameterAsInts(parameters, self.BANDS, context):
                feedback.pushWarning(self.tr("Bands: the input is a Sentinel-2 product, whose 10 bands are read by "
                                             "name; the bands chosen are not used."))
            name = layer.name() if layer is not None and layer.isValid() else product_label(text)
            return text, layer if layer is not None and layer.isValid() else None, name, None
        if layer is None or not layer.isValid():
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        return text, layer, layer.name(), self._bands(parameters, context, layer, feedback)

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        source, layer, layer_name, bands = self._input(parameters, context, feedback)
        hse_path = self._raster_output(parameters, self.OUTPUT_HSE, context)
        lcz_path = self._raster_output(parameters, self.OUTPUT_LCZ, context)
        confidence_path = self._raster_output(parameters, self.OUTPUT_CONFIDENCE, context) or None
        stats_path = self.parameterAsFileOutput(parameters, self.OUTPUT_STATS, context) or None
        umep_path = self._raster_output(parameters, self.OUTPUT_LCZ_UMEP, context) or None
        w2w_path = self._raster_output(parameters, self.OUTPUT_LCZ_W2W, context) or None
        params = {
            "input": source, "hse": hse_path, "lcz": lcz_path, "confidence": confidence_path,
            "stats": stats_path, "model": self.parameterAsFile(parameters, self.MODEL, context) or None,
            "umep": umep_path, "w2w": w2w_path,
            "majority": MAJORITY_SIZES[self.parameterAsEnum(parameters, self.MAJORITY, context)],
            "options": self._options(parameters, context, layer, bands),
        }
        feedback.pushInfo(self.tr("Input: {source}").format(source=source))
        result = run_engine(params, self.parameterAsFile(parameters, self.PYTHON, context), feedback)

        self._name_and_style(context, feedback, layer_name, hse_path, lcz_path, confidence_path, umep_path,
                             w2w_path)
        self._report(source, result, feedback)
        return {
            self.OUTPUT_HSE: hse_path,
            self.OUTPUT_LCZ: lcz_path,
            self.OUTPUT_CONFIDENCE: confidence_path,
            self.OUTPUT_STATS: stats_path,
            self.OUTPUT_LCZ_UMEP: umep_path,
            self.OUTPUT_LCZ_W2W: w2w_path,
        }

    def _bands(self, parameters: dict[str, Any], context: QgsProcessingContext, layer: QgsRasterLayer,
               feedback: QgsProcessingFeedback) -> Optional[list[str]]:
        """The band names the user chose (None: from the file), warning where they contradict the layer's."""
        return chosen_bands(self.parameterAsInts(parameters, self.BANDS, context), layer, feedback.pushWarning)

    def _options(self, parameters: dict[str, Any], context: QgsProcessingContext, layer: Optional[QgsRasterLayer],
                 bands: Optional[list[str]]) -> dict[str, Any]:
        """The engine's PredictOptions fields; an empty tile size, overlap or offset is left to the engine."""
        def optional_number(name: str, as_double: bool = False) -> Optional[float]:
            if parameters.get(name) in (None, ""):
                return None
            return (self.parameterAsDouble if as_double else self.parameterAsInt)(parameters, name, context)

        extent, extent_crs = None, None
        crs = layer.crs() if layer is not None else self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        rect = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        if parameters.get(self.EXTENT) not in (None, "") and not rect.isNull():
            extent = [rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()]
            extent_crs = crs.toWkt() if crs.isValid() else None
        return {
            "bands": bands, "extent": extent, "extent_crs": extent_crs,
            "tile_size": optional_number(self.TILE_SIZE), "overlap": optional_number(self.OVERLAP),
            "batch_size": optional_number(self.BATCH_SIZE),
            "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            "runtime": RUNTIMES[self.parameterAsEnum(parameters, self.RUNTIME, context)],
            # The Processing dialog has already asked before replacing a file the user chose.
            "overwrite": True,
            "cog": self.parameterAsBool(parameters, self.COG, context),
            "offset": optional_number(self.OFFSET, as_double=True),
        }

    def _name_and_style(self, context: QgsProcessingContext, feedback: QgsProcessingFeedback, input_name: str,
                        hse_path: str, lcz_path: str, confidence_path: Optional[str], umep_path: Optional[str],
                        w2w_path: Optional[str]) -> None:
        """Layer names after the input layer's; styles for the maps. The exports carry their own colour table and
        class names (core.outputs.export): they only get a layer name."""
        names = {styles.HSE: self.tr("HSE density - {name}"), styles.LCZ: self.tr("LCZ - {name}"),
                 styles.CONFIDENCE: self.tr("LCZ confidence - {name}")}
        names = {kind: text.format(name=input_name) for kind, text in names.items()}
        self._style_outputs(context, feedback, [
            (hse_path, styles.HSE), (lcz_path, styles.LCZ), (confidence_path, styles.CONFIDENCE)], names)
        for path, text in ((umep_path, self.tr("LCZ (UMEP codes) - {name}")),
                           (w2w_path, self.tr("LCZ for w2w - {name}"))):
            if path and context.willLoadLayerOnCompletion(path):
                details = context.layerToLoadOnCompletionDetails(path)
                details.name = text.format(name=input_name)
                details.forceName = True

    def _raster_output(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str:
        """The destination path of raster output `name` ('' when an optional one is skipped); GeoTIFF only."""
        path = self.parameterAsOutputLayer(parameters, name, context)
        if path and not path.lower().endswith(RASTER_EXTENSIONS):
            raise QgsProcessingException(self.tr(
                "{output}: '{path}' is not a GeoTIFF name. urbanmtl writes GeoTIFF files; save the output with "
                "the ending .tif."
            ).format(output=self.parameterDefinition(name).description(), path=path))
        return path

    def _style_outputs(
        self, context: QgsProcessingContext, feedback: QgsProcessingFeedback,
        outputs: list[tuple[Optional[str], str]], names: dict[str, str],
    ) -> None:
        """Write a .qml beside each output, and name and style the layers Processing will load."""
        for path, kind in outputs:
            if not path:
                continue
            try:
                styles.write_sidecar_style(path, kind)
            except OSError as exc:
                # The maps are valid without their style; say so rather than failing the whole run.
                feedback.pushWarning(self.tr("{error} The map is written but opens unstyled.").format(error=exc))
            if context.willLoadLayerOnCompletion(path):
                details = context.layerToLoadOnCompletionDetails(path)
                details.name = names[kind]
                details.forceName = True
            styles.style_when_loaded(context, path, kind, names[kind])

    def _report(self, source: str, result: dict[str, Any], feedback: QgsProcessingFeedback) -> None:
        """The run's summary: input, device, tiles, time and area mapped, then the largest LCZ classes."""
        area = float(result.get("area_km2") or 0.0)
        text = (self.tr("Mapped {area} km² of {source} on {device}: 1 tile in {seconds} s{warped}.")
                if result.get("tiles") == 1 else
                self.tr("Mapped {area} km² of {source} on {device}: {tiles} tiles in {seconds} s{warped}."))
        feedback.pushInfo(text.format(area=f"{area:.2f}", source=source, device=result.get("device", "?"),
                 tiles=result.get("tiles", "?"), seconds=f"{float(result.get('seconds') or 0.0):.1f}",
                 warped=self.tr(" (input warped to 10 m UTM)") if result.get("warped") else ""))
        rows = sorted(result.get("stats") or [], key=lambda r: -float(r.get("area_km2") or 0.0))
        shown = [r for r in rows if float(r.get("area_km2") or 0.0) > 0][:5]
        if shown:
            feedback.pushInfo(self.tr("Largest local climate zones: {classes}").format(classes="; ".join(
                f"{r.get('letter', r.get('code'))} {r.get('name', '')}: {float(r['area_km2']):.2f} km²"
                for r in shown)))
