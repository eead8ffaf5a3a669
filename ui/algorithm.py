"""Processing algorithm urbanmtl:map_hse_lcz: a QGIS front end that runs the engine in a child process.

TensorFlow never enters the QGIS process (see ui/engine.py for why): the parameters go to
`python -m core.worker` in a Python that has TensorFlow, and its JSON lines come back as progress, log
messages and the result. This module imports only numpy-level engine modules (bands, LCZ names, errors).
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

from qgis.core import (
    QgsProcessingAlgorithm,
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
    QgsSettings,
)
from qgis.PyQt.QtCore import QCoreApplication, QUrl
from qgis.PyQt.QtGui import QIcon

from ..core.bands import MODEL_BANDS, normalize_band_name
from . import engine, styles

ICON_PATH = os.path.join(os.path.dirname(__file__), "icons", "urbanmtl.svg")
README_PATH = os.path.join(str(engine.PLUGIN_DIR), "README.md")

#: DEVICE enum index -> PredictOptions.device (QGIS 3.22 enums pass the index, not the text).
DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")

#: File endings the engine's GeoTIFF writer is honest about.
RASTER_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff")

_KM2 = re.compile(r"\bkm2\b")


def tr(text: str) -> str:
    return QCoreApplication.translate("MapHseLczAlgorithm", text)


def user_text(message: str) -> str:
    """An engine message as the log shows it (square kilometres written km²)."""
    return _KM2.sub("km²", message)


def band_names(selected: list[int], descriptions: list[Optional[str]]) -> list[str]:
    """One band name per band of the input (file order) from the band numbers chosen in BANDS.

    `selected`: 1-based band numbers, the i-th of which is MODEL_BANDS[i]; `descriptions`: the input's band
    descriptions (None where a band has none), which also gives the band count. Bands not chosen are named
    "B1": the engine looks up only MODEL_BANDS among the names, so any valid name outside them serves.
    Raises QgsProcessingException when the choice is not ten distinct bands of this raster.
    """
    count = len(descriptions)
    order = ", ".join(MODEL_BANDS)
    if len(selected) != len(MODEL_BANDS):
        raise QgsProcessingException(tr(
            "Bands: {chosen} band(s) were chosen, but the model needs exactly {needed}, in the order {order}. "
            "Choose ten bands, or none to detect them from band names or count."
        ).format(chosen=len(selected), needed=len(MODEL_BANDS), order=order))
    if len(set(selected)) != len(selected):
        raise QgsProcessingException(tr(
            "Bands: band(s) {twice} were chosen twice. Choose ten different bands, in the order {order}."
        ).format(twice=sorted({b for b in selected if selected.count(b) > 1}), order=order))
    outside = [b for b in selected if not 1 <= b <= count]
    if outside:
        raise QgsProcessingException(tr(
            "Bands: band number(s) {outside} do not exist; the input has {count} band(s)."
        ).format(outside=outside, count=count))
    names = ["B1"] * count
    for model_band, number in zip(MODEL_BANDS, selected):
        names[number - 1] = model_band
    return names


def band_mismatches(selected: list[int], descriptions: list[Optional[str]]) -> list[str]:
    """Human-readable conflicts between the BANDS choice and the file's own band names (empty if none).

    E.g. ["band 13 is named B8A in the file but was chosen as B12"]: a sign of a wrong order.
    """
    conflicts = []
    for model_band, number in zip(MODEL_BANDS, selected):
        named = normalize_band_name(descriptions[number - 1]) if 1 <= number <= len(descriptions) else None
        if named is not None and named != model_band:
            conflicts.append(tr("band {number} is named {named} in the file but was chosen as {band}").format(
                number=number, named=named, band=model_band))
    return conflicts


def layer_band_descriptions(layer: QgsRasterLayer) -> list[Optional[str]]:
    """The description of every band of `layer` (None where the file gives none), from GDAL via QGIS."""
    provider = layer.dataProvider()
    descriptions: list[Optional[str]] = []
    for band in range(1, layer.bandCount() + 1):
        # generateBandName gives "Band 09: B8A" with a description and "Band 09" without one.
        name = provider.generateBandName(band)
        descriptions.append(name.split(": ", 1)[1] if ": " in name else None)
    return descriptions


def layer_file(layer: QgsRasterLayer) -> str:
    """The path or GDAL dataset name the engine should open for `layer`.

    QGIS appends options such as "|layername=..." to some sources; GDAL dataset names (e.g.
    SENTINEL2_L1C:...:10m:EPSG_32633) are kept whole.
    """
    if layer.providerType() != "gdal":
        raise QgsProcessingException(tr(
            "The input layer '{name}' comes from the '{provider}' provider; urbanmtl reads image files through "
            "GDAL. Save it as a GeoTIFF (Raster > Conversion > Translate) and use that."
        ).format(name=layer.name(), provider=layer.providerType()))
    return layer.source().split("|", 1)[0]


def help_html() -> str:
    """The help panel of the dialog: short paragraphs for a map user, one line each so that they wrap."""
    readme = QUrl.fromLocalFile(README_PATH).toString()
    paragraphs = [
        tr("Maps two layers from one Sentinel-2 image. <b>HSE density</b> is the built-up fraction of each 20 m "
           "pixel: 0 where there are no buildings or paved surfaces (drawn transparent), 1 where the pixel is "
           "fully built-up. <b>Local climate zones (LCZ)</b> give each 100 m cell one of 17 classes: LCZ 1&ndash;10 "
           "are built types (compact high-rise to heavy industry), A&ndash;G are land cover (trees, low plants, "
           "bare soil, water). The optional <b>LCZ confidence</b> is the probability of the class shown, and the "
           "optional statistics table gives the area (km&sup2;) and mean HSE of every class."),
        tr("<b>Input</b>: a Sentinel-2 Level-1C or Level-2A image, e.g. a GeoTIFF, VRT or .SAFE product, whose "
           "bands are named (B2, B3, &hellip;) or in the standard 13-band (L1C) or 12-band (L2A) order. Set an "
           "<b>extent</b> to map only part of it. Reflectance is (DN + offset) / 10000; images acquired from "
           "25 January 2022 on need an offset of &minus;1000, which a .SAFE product carries: for a GeoTIFF "
           "export, set <b>DN offset</b> to &minus;1000 under Advanced parameters."),
        tr("<b>Model</b>: the multitask network of Qiu et al. (IEEE GRSL 19, 2022, 1000705); the bundled model "
           "learned from pseudo-labels of another network, so check the maps against what you know."),
        tr("The network runs in a separate Python program that has TensorFlow; if it is missing, the algorithm "
           "says exactly what to install. Tile size, device and the Python interpreter are under Advanced "
           "parameters. More: see README.md in the plugin folder (<a href=\"{url}\">{path}</a>).").format(
            url=readme, path=README_PATH),
    ]
    return "".join(f"<p>{p}</p>" for p in paragraphs)


class MapHseLczAlgorithm(QgsProcessingAlgorithm):
    """Map settlement density and local climate zones from a Sentinel-2 image."""

    INPUT = "INPUT"
    BANDS = "BANDS"
    EXTENT = "EXTENT"
    MODEL = "MODEL"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    COG = "COG"
    OFFSET = "OFFSET"
    PYTHON = "PYTHON"
    OUTPUT_HSE = "OUTPUT_HSE"
    OUTPUT_LCZ = "OUTPUT_LCZ"
    OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"
    OUTPUT_STATS = "OUTPUT_STATS"

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("MapHseLczAlgorithm", text)

    def name(self) -> str:
        return "map_hse_lcz"

    def displayName(self) -> str:
        return self.tr("Map settlement density and local climate zones")

    def group(self) -> str:
        return ""

    def groupId(self) -> str:
        return ""

    def tags(self) -> list[str]:
        return self.tr("sentinel-2,settlement,hse,built-up,lcz,local climate zones,urban,deep learning,"
                       "classification").split(",")

    def shortHelpString(self) -> str:
        return help_html()

    def helpUrl(self) -> str:
        return QUrl.fromLocalFile(README_PATH).toString()

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def svgIconPath(self) -> str:
        return ICON_PATH

    def createInstance(self) -> "MapHseLczAlgorithm":
        return MapHseLczAlgorithm()

    def initAlgorithm(self, config: Optional[dict[str, Any]] = None) -> None:
        tr = self.tr
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Sentinel-2 image")))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, tr("Extent to map (empty = the whole image)"), optional=True))

        advanced = [
            QgsProcessingParameterBand(
                self.BANDS, tr("Bands {order}, in this order (empty = from band names or count)").format(
                    order=", ".join(MODEL_BANDS)),
                None, self.INPUT, optional=True, allowMultiple=True),
            QgsProcessingParameterFile(
                self.MODEL, tr("Model (.keras; empty = the bundled model)"), QgsProcessingParameterFile.File,
                extension="", optional=True, fileFilter=tr("Keras models (*.keras)")),
            # 16 = core.tiling.MIN_TILE_SIZE, written out because importing core.tiling loads TensorFlow.
            QgsProcessingParameterNumber(
                self.TILE_SIZE, tr("Tile size (10 m pixels, multiple of 8)"), QgsProcessingParameterNumber.Integer,
                256, minValue=16, maxValue=4096),
            QgsProcessingParameterNumber(
                self.OVERLAP, tr("Tile overlap (10 m pixels on each side)"), QgsProcessingParameterNumber.Integer,
                32, minValue=0, maxValue=1024),
            QgsProcessingParameterEnum(
                self.DEVICE, tr("Compute on"),
                [tr("Automatic (GPU if TensorFlow sees one, else CPU)"), tr("CPU"), tr("GPU")], defaultValue=0),
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, tr("Tiles per batch"), QgsProcessingParameterNumber.Integer, 4, minValue=1,
                maxValue=256),
            QgsProcessingParameterNumber(
                self.OFFSET, tr("DN offset to use instead of the product metadata's (e.g. -1000)"),
                QgsProcessingParameterNumber.Double, None, optional=True, minValue=-10000, maxValue=10000),
            QgsProcessingParameterBoolean(self.COG, tr("Write Cloud Optimized GeoTIFFs"), False),
            QgsProcessingParameterFile(
                self.PYTHON,
                tr("Python interpreter with TensorFlow (empty = automatic; a choice is remembered)"),
                QgsProcessingParameterFile.File, extension="", optional=True,
                # "*.*" would ask for a file name ending, which /usr/bin/python3 has not.
                fileFilter=tr("Python interpreters (python*);;All files (*)")),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_HSE, tr("Settlement density (HSE, 20 m)")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_LCZ, tr("Local climate zones (LCZ, 100 m)")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_CONFIDENCE, tr("LCZ confidence (100 m)"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_STATS, tr("Area statistics per LCZ class (CSV)"), tr("CSV files (*.csv)"), optional=True,
            createByDefault=False))

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        source = layer_file(layer)

        selected = self.parameterAsInts(parameters, self.BANDS, context)
        bands: Optional[list[str]] = None
        if selected:
            descriptions = layer_band_descriptions(layer)
            bands = band_names(selected, descriptions)
            for conflict in band_mismatches(selected, descriptions):
                feedback.pushWarning(self.tr("Bands: {conflict}. Check the order of the chosen bands.").format(
                    conflict=conflict))

        extent, extent_crs = None, None
        rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
        if parameters.get(self.EXTENT) not in (None, "") and not rect.isNull():
            extent = [rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()]
            extent_crs = layer.crs().toWkt() if layer.crs().isValid() else None

        model = self.parameterAsFile(parameters, self.MODEL, context) or None
        hse_path = self._raster_output(parameters, self.OUTPUT_HSE, context)
        lcz_path = self._raster_output(parameters, self.OUTPUT_LCZ, context)
        confidence_path = self._raster_output(parameters, self.OUTPUT_CONFIDENCE, context) or None
        stats_path = self.parameterAsFileOutput(parameters, self.OUTPUT_STATS, context) or None

        params = {
            "input": source, "hse": hse_path, "lcz": lcz_path, "confidence": confidence_path,
            "stats": stats_path, "model": model,
            "options": {
                "bands": bands, "extent": extent, "extent_crs": extent_crs,
                "tile_size": self.parameterAsInt(parameters, self.TILE_SIZE, context),
                "overlap": self.parameterAsInt(parameters, self.OVERLAP, context),
                "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                # The Processing dialog has already asked before replacing a file the user chose.
                "overwrite": True,
                "cog": self.parameterAsBool(parameters, self.COG, context),
                "offset": None if parameters.get(self.OFFSET) in (None, "")
                else self.parameterAsDouble(parameters, self.OFFSET, context),
            },
        }
        feedback.pushInfo(self.tr("Input: {source}").format(source=source))
        result = self._run_engine(params, self.parameterAsFile(parameters, self.PYTHON, context), feedback)

        # Layer names in the project, after the input layer's.
        names = {styles.HSE: self.tr("HSE density - {name}"), styles.LCZ: self.tr("LCZ - {name}"),
                 styles.CONFIDENCE: self.tr("LCZ confidence - {name}")}
        names = {kind: text.format(name=layer.name()) for kind, text in names.items()}
        self._style_outputs(context, feedback, [
            (hse_path, styles.HSE), (lcz_path, styles.LCZ), (confidence_path, styles.CONFIDENCE)], names)
        self._report(source, result, feedback)
        return {
            self.OUTPUT_HSE: hse_path,
            self.OUTPUT_LCZ: lcz_path,
            self.OUTPUT_CONFIDENCE: confidence_path,
            self.OUTPUT_STATS: stats_path,
        }

    def _run_engine(self, params: dict[str, Any], explicit_python: str,
                    feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Run core.worker in a child process; its messages go to `feedback`. Returns its result event."""
        settings = QgsSettings()
        try:
            interpreter = engine.find_python(explicit_python or None, settings.value(engine.SETTINGS_KEY, "", str))
            env = engine.child_environment()
            info = engine.check_interpreter(interpreter, env)
        except engine.EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        if explicit_python:
            settings.setValue(engine.SETTINGS_KEY, interpreter.path)
        feedback.pushInfo(self.tr("Engine: {python} ({source})").format(
            python=interpreter.path, source=interpreter.source))

        run = engine.EngineRun(interpreter, params, env, feedback.isCanceled)
        result: Optional[dict[str, Any]] = None
        error: Optional[dict[str, Any]] = None
        try:
            run.start()
            for event in run.events():
                kind = event.get("event")
                if kind == "progress":
                    feedback.setProgress(float(event.get("percent", 0.0)))
                elif kind == "log":
                    feedback.pushInfo(user_text(str(event.get("message", ""))))
                elif kind == "ready":
                    feedback.pushInfo(self.tr("TensorFlow {version} on {device}").format(
                        version=event.get("tensorflow", "?"), device=event.get("device", "?")))
                elif kind == "result":
                    result = event
                elif kind == "error":
                    error = event
                else:
                    feedback.pushDebugInfo(str(event.get("message", event)))
        except engine.EngineCancelled as exc:
            raise QgsProcessingException(str(exc)) from None
        except engine.EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        finally:
            # Whatever ended the loop early, no child outlives the run and no temporary file stays behind.
            if run.process is not None and run.process.poll() is None:
                run.stop()

        if error is not None:
            if error.get("kind") == "missing":
                module = error.get("module")
                raise QgsProcessingException(engine.missing_message(interpreter, [module] if module else [], info))
            if error.get("kind") == "internal" and error.get("detail"):
                feedback.pushDebugInfo(str(error["detail"]))
            run.stop()
            raise QgsProcessingException(user_text(str(error.get("message", ""))))
        if result is None:
            run.stop()
            tail = "\n".join(run.stderr_tail)
            if tail:
                feedback.pushDebugInfo(tail)
            raise QgsProcessingException(self.tr(
                "The urbanmtl engine ({python}) stopped without a result (exit status {code}). Its last output:\n"
                "{tail}").format(python=interpreter.path, code=run.returncode, tail=tail[-2000:] or "-"))
        return result

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
