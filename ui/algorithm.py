"""Processing algorithm urbanmtl:map_hse_lcz: a thin QGIS front end over core.predict.predict_scene."""

from __future__ import annotations

import os
import platform
import sys
import sysconfig
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
)
from qgis.PyQt.QtGui import QIcon

# Only numpy-level engine modules at import time: the provider must load where TensorFlow is missing.
from ..core.bands import MODEL_BANDS, normalize_band_name
from ..core.errors import UrbanMTLError
from . import styles

ICON_PATH = os.path.join(os.path.dirname(__file__), "icons", "urbanmtl.svg")

#: DEVICE enum index -> PredictOptions.device (QGIS 3.22 enums pass the index, not the text).
DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")

#: File endings the engine's GeoTIFF writer is honest about.
RASTER_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff")

TENSORFLOW_PIN = '"tensorflow==2.19.*" "numpy<2"'
#: Modules whose absence means rasterio is missing (QGIS itself does not ship it everywhere).
RASTERIO_PACKAGES = frozenset({"rasterio", "affine"})

HELP = f"""
<p>Maps <b>human settlement extent</b> (HSE: the fraction of built-up or impervious surface, 0 to 1, on a 20 m
grid) and <b>local climate zones</b> (LCZ 1&ndash;10, A&ndash;G on a 100 m grid) from one Sentinel-2 image, with
one multitask convolutional network (Qiu et al. 2022). The same engine runs from the command line as
<code>python -m core.predict</code>.</p>

<h3>Input</h3>
<p><b>Sentinel-2 image</b>: Level-1C or Level-2A, any raster GDAL reads (GeoTIFF, VRT, a .SAFE folder or its
.zip). The network reads the ten bands {", ".join(MODEL_BANDS)} on the 10 m grid. They are found from the band
names in the file (B2, B02, B8A, &hellip;); a file without band names is read by its band count: 13 bands =
Level-1C order (B1&hellip;B12 with B8A after B8), or the EuroSAT order (B8A last) when band 10 is the dark cirrus
band B10; 12 bands = Level-2A (no B10); 10 bands = the order above. The log says which mapping was used.
A raster that is not 10 m or not in a projected CRS is warped on the fly to 10 m in its UTM zone.</p>
<p><b>Bands</b> (optional): for any other stack, choose exactly ten bands, <i>in the order</i>
{", ".join(MODEL_BANDS)}; the first band chosen is used as B2, the second as B3, and so on (drag the bands into
this order in the selection list).</p>
<p><b>Scaling</b>: digital numbers are converted to reflectance as (DN + offset) / 10000, nothing else. The
offset is &minus;1000 for products of processing baseline 04.00 and later (acquired from 25 January 2022 on)
when the product metadata says so (RADIO_ADD_OFFSET / BOA_ADD_OFFSET, as a .SAFE product carries it), else 0.
A GeoTIFF exported from a recent product without that metadata is read with offset 0, which brightens every
band by 0.1 and spoils the maps: use the .SAFE product, or set the advanced parameter <b>DN offset</b> to
&minus;1000.</p>
<p><b>Extent</b> (optional): map only this area (any CRS; it is converted to the image's CRS).
<b>Model</b> (optional): a .keras file written by <code>python -m core.train</code>; empty = the model
shipped with the plugin. <b>Tile size</b> and <b>overlap</b> are in 10 m pixels (tile size a multiple of 8);
overlapping tiles are blended smoothly so no seams appear. <b>Compute on</b>: automatic uses a GPU when
TensorFlow sees one.</p>

<h3>Outputs</h3>
<ul>
<li><b>Settlement density (HSE)</b>: float32 GeoTIFF, 0 (none) to 1 (fully built-up), 20 m pixels.</li>
<li><b>Local climate zones (LCZ)</b>: byte GeoTIFF with codes 1&ndash;17 (1&ndash;10 built types, 11&ndash;17 =
A&ndash;G), 0 = no data, 100 m cells; the class probabilities are averaged over each cell before the winning
class is taken. The file carries the LCZ colours and class names.</li>
<li><b>LCZ confidence</b> (optional): the winning class probability per 100 m cell.</li>
<li><b>Area statistics</b> (optional): a CSV with the cells, area (km&sup2;) and mean HSE of every LCZ class.</li>
</ul>
<p>All grids start at the upper-left corner of the image (or of the extent, widened to whole image pixels
and clipped to the image); pixels that are no data in the
image are no data in the outputs. A style file (.qml) is written next to every raster, so the maps open
styled with the LCZ legend (e.g. &ldquo;2 Compact midrise&rdquo;) wherever they are loaded later.</p>

<h3>Caveats</h3>
<p>The maps are model predictions, not measurements. Models trained on the sample data that comes with
urbanmtl learn from <b>pseudo-labels</b>: LCZ and HSE maps predicted by a teacher network (a So2Sat LCZ42
classifier), not reference maps, so they inherit the teacher's errors. The model card (model_card.json beside
the .keras file) says what a model was trained on. Clouds, snow and season can mislead any model; check the
maps against local knowledge before relying on them.</p>

<h3>Requirements</h3>
<p>rasterio (on Debian and Ubuntu the package python3-rasterio) and TensorFlow 2.19 in the Python that QGIS
uses, for example
<code>/usr/bin/python3 -m pip install --user {TENSORFLOW_PIN}</code> on Linux (Debian 12 and Ubuntu 23.04 or
later also need <code>--break-system-packages</code>), or <code>python -m pip install {TENSORFLOW_PIN}</code> in
the OSGeo4W Shell on Windows. When either is missing, the algorithm says exactly what to run.</p>

<h3>Citation</h3>
<p>C. Qiu, L. Liebel, L. H. Hughes, M. Schmitt, M. K&ouml;rner and X. X. Zhu, &ldquo;Multitask Learning for Human
Settlement Extent Regression and Local Climate Zone Classification&rdquo;, <i>IEEE Geoscience and Remote Sensing
Letters</i> 19 (2022) 1000705, doi:10.1109/LGRS.2020.3037246.</p>
"""


def install_hint() -> str:
    """How to install TensorFlow into the Python this QGIS runs: the commands, as one or two sentences."""
    if platform.system() == "Windows":
        return (
            f"Open the OSGeo4W Shell and run: python -m pip install {TENSORFLOW_PIN}, then restart QGIS."
        )
    python = _qgis_python()
    steps = f"{python} -m pip install --user {TENSORFLOW_PIN}"
    if _externally_managed():
        # A distribution's Python (PEP 668) refuses pip installs unless told; with --user they still go only
        # into the home folder, which QGIS's Python reads. TensorFlow brings pip's h5py, whose own HDF5
        # library clashes with the one the distribution's QGIS and GDAL load, so the system h5py must win.
        steps = (
            f"{python} -m pip install --user --break-system-packages {TENSORFLOW_PIN} (the flag is needed for a "
            f"system-managed Python; nothing outside your home folder changes), then {python} -m pip uninstall -y "
            f"--break-system-packages h5py (pip's h5py clashes with QGIS's HDF5 library; install python3-h5py "
            f"with the system package manager instead)"
        )
    gpu = (
        ' For an NVIDIA GPU install "tensorflow[and-cuda]==2.19.*" instead of "tensorflow==2.19.*".'
        if platform.system() == "Linux" else ""
    )
    return f"Run: {steps}, then restart QGIS.{gpu}"


def rasterio_hint() -> str:
    """How to install rasterio into the Python this QGIS runs, as one sentence."""
    if platform.system() == "Windows":
        return "Open the OSGeo4W Shell and run: python -m pip install rasterio, then restart QGIS."
    if _externally_managed():
        # The distribution's rasterio is built against the same GDAL as its QGIS; a pip wheel brings another.
        return "Install the system package python3-rasterio (e.g. sudo apt install python3-rasterio), then restart QGIS."
    return f"Run: {_qgis_python()} -m pip install --user rasterio, then restart QGIS."


def _externally_managed() -> bool:
    """True when the running Python carries the PEP 668 marker (Debian 12, Ubuntu 23.04 and later)."""
    try:
        return os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED"))
    except (KeyError, OSError):
        return False


def _qgis_python() -> str:
    """The python executable of the interpreter QGIS embeds, e.g. /usr/bin/python3.11.

    sys.executable is no guide inside QGIS: it is the QGIS binary, or whatever "python3" PATH finds first
    (a pyenv or conda one), which would install TensorFlow where QGIS never looks.
    """
    versioned = os.path.join(sys.base_exec_prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}")
    if os.path.exists(versioned):
        return versioned
    if os.path.basename(sys.executable).startswith("python"):
        return sys.executable
    return "python3"


def band_names(selected: list[int], descriptions: list[Optional[str]]) -> list[str]:
    """One band name per band of the input (file order) from the band numbers chosen in BANDS.

    `selected`: 1-based band numbers, the i-th of which is MODEL_BANDS[i]; `descriptions`: the input's band
    descriptions (None where a band has none), which also gives the band count. Bands not chosen are named
    "B1": the engine looks up only MODEL_BANDS among the names, so any valid name outside them serves.
    Raises QgsProcessingException when the choice is not ten distinct bands of this raster.
    """
    count = len(descriptions)
    if len(selected) != len(MODEL_BANDS):
        raise QgsProcessingException(
            f"Bands: {len(selected)} band(s) were chosen, but the model needs exactly {len(MODEL_BANDS)}, in the "
            f"order {', '.join(MODEL_BANDS)}. Choose ten bands, or none to detect them from band names or count."
        )
    if len(set(selected)) != len(selected):
        raise QgsProcessingException(
            f"Bands: band(s) {sorted({b for b in selected if selected.count(b) > 1})} were chosen twice. Choose "
            f"ten different bands, in the order {', '.join(MODEL_BANDS)}."
        )
    outside = [b for b in selected if not 1 <= b <= count]
    if outside:
        raise QgsProcessingException(
            f"Bands: band number(s) {outside} do not exist; the input has {count} band(s)."
        )
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
            conflicts.append(f"band {number} is named {named} in the file but was chosen as {model_band}")
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
        raise QgsProcessingException(
            f"The input layer '{layer.name()}' comes from the '{layer.providerType()}' provider; urbanmtl reads "
            f"image files through GDAL. Save it as a GeoTIFF (Raster > Conversion > Translate) and use that."
        )
    return layer.source().split("|", 1)[0]


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
    OUTPUT_HSE = "OUTPUT_HSE"
    OUTPUT_LCZ = "OUTPUT_LCZ"
    OUTPUT_CONFIDENCE = "OUTPUT_CONFIDENCE"
    OUTPUT_STATS = "OUTPUT_STATS"

    def name(self) -> str:
        return "map_hse_lcz"

    def displayName(self) -> str:
        return "Map settlement density and local climate zones"

    def group(self) -> str:
        return ""

    def groupId(self) -> str:
        return ""

    def tags(self) -> list[str]:
        return ["sentinel-2", "settlement", "hse", "built-up", "lcz", "local climate zones", "urban",
                "deep learning", "classification"]

    def shortHelpString(self) -> str:
        return HELP

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def svgIconPath(self) -> str:
        return ICON_PATH

    def createInstance(self) -> "MapHseLczAlgorithm":
        return MapHseLczAlgorithm()

    def initAlgorithm(self, config: Optional[dict[str, Any]] = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Sentinel-2 image"))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, f"Bands {', '.join(MODEL_BANDS)}, in this order (empty = from band names or count)",
            None, self.INPUT, optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, "Extent to map (empty = the whole image)", optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model (.keras; empty = the bundled model)", QgsProcessingParameterFile.File,
            extension="", optional=True, fileFilter="Keras models (*.keras)"))
        # 16 = core.tiling.MIN_TILE_SIZE, written out because importing core.tiling loads TensorFlow.
        self.addParameter(QgsProcessingParameterNumber(
            self.TILE_SIZE, "Tile size (10 m pixels, multiple of 8)", QgsProcessingParameterNumber.Integer,
            256, minValue=16, maxValue=4096))
        self.addParameter(QgsProcessingParameterNumber(
            self.OVERLAP, "Tile overlap (10 m pixels on each side)", QgsProcessingParameterNumber.Integer,
            32, minValue=0, maxValue=1024))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, "Compute on",
            ["Automatic (GPU if TensorFlow sees one, else CPU)", "CPU", "GPU"], defaultValue=0))
        batch = QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Tiles per batch", QgsProcessingParameterNumber.Integer, 4, minValue=1,
            maxValue=256)
        offset = QgsProcessingParameterNumber(
            self.OFFSET, "DN offset to use instead of the product metadata's (e.g. -1000)",
            QgsProcessingParameterNumber.Double, None, optional=True, minValue=-10000, maxValue=10000)
        cog = QgsProcessingParameterBoolean(self.COG, "Write Cloud Optimized GeoTIFFs", False)
        for advanced in (batch, offset, cog):
            advanced.setFlags(advanced.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(advanced)
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_HSE, "Settlement density (HSE, 20 m)"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_LCZ, "Local climate zones (LCZ, 100 m)"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_CONFIDENCE, "LCZ confidence (100 m)", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_STATS, "Area statistics per LCZ class (CSV)", "CSV files (*.csv)", optional=True,
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
                feedback.pushWarning(f"Bands: {conflict}. Check the order of the chosen bands.")

        extent, extent_crs = None, None
        rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
        if parameters.get(self.EXTENT) not in (None, "") and not rect.isNull():
            extent = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
            extent_crs = layer.crs().toWkt() if layer.crs().isValid() else None

        model = self.parameterAsFile(parameters, self.MODEL, context) or None
        hse_path = self._raster_output(parameters, self.OUTPUT_HSE, context)
        lcz_path = self._raster_output(parameters, self.OUTPUT_LCZ, context)
        confidence_path = self._raster_output(parameters, self.OUTPUT_CONFIDENCE, context) or None
        stats_path = self.parameterAsFileOutput(parameters, self.OUTPUT_STATS, context) or None

        engine = _import_engine()
        options = engine.PredictOptions(
            bands=bands,
            extent=extent,
            extent_crs=extent_crs,
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            overlap=self.parameterAsInt(parameters, self.OVERLAP, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            # The Processing dialog has already asked before replacing a file the user chose.
            overwrite=True,
            cog=self.parameterAsBool(parameters, self.COG, context),
            offset=None if parameters.get(self.OFFSET) in (None, "")
            else self.parameterAsDouble(parameters, self.OFFSET, context),
        )
        feedback.pushInfo(f"Input: {source}")
        try:
            result = engine.predict_scene(
                source, hse_path, lcz_path,
                confidence_path=confidence_path, stats_path=stats_path, model_path=model, options=options,
                progress=feedback.setProgress, is_cancelled=feedback.isCanceled, log=feedback.pushInfo,
            )
        except UrbanMTLError as exc:
            raise QgsProcessingException(str(exc)) from None

        self._style_outputs(
            context, feedback,
            [(hse_path, styles.HSE), (lcz_path, styles.LCZ), (confidence_path, styles.CONFIDENCE)],
        )
        _report(result, feedback)
        return {
            self.OUTPUT_HSE: hse_path,
            self.OUTPUT_LCZ: lcz_path,
            self.OUTPUT_CONFIDENCE: confidence_path,
            self.OUTPUT_STATS: stats_path,
        }

    def _raster_output(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> str:
        """The destination path of raster output `name` ('' when an optional one is skipped); GeoTIFF only."""
        path = self.parameterAsOutputLayer(parameters, name, context)
        if path and not path.lower().endswith(RASTER_EXTENSIONS):
            raise QgsProcessingException(
                f"{self.parameterDefinition(name).description()}: '{path}' is not a GeoTIFF name. urbanmtl "
                f"writes GeoTIFF files; save the output with the ending .tif."
            )
        return path

    def _style_outputs(
        self, context: QgsProcessingContext, feedback: QgsProcessingFeedback,
        outputs: list[tuple[Optional[str], str]],
    ) -> None:
        """Write a .qml beside each output and style the layers Processing will load into the project."""
        for path, kind in outputs:
            if not path:
                continue
            try:
                styles.write_sidecar_style(path, kind)
            except OSError as exc:
                # The maps are valid without their style; say so rather than failing the whole run.
                feedback.pushWarning(f"{exc} The map is written but opens unstyled.")
            styles.style_when_loaded(context, path, kind)


def _import_engine() -> Any:
    """The engine module, imported on first use so that QGIS starts without TensorFlow.

    Raises QgsProcessingException with install instructions when TensorFlow (or Keras) cannot be imported.
    """
    try:
        from ..core import predict
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing and missing == (__package__ or "").split(".")[0]:
            # One of our own modules is missing: an incomplete installation, not a missing dependency.
            raise QgsProcessingException(
                f"The urbanmtl installation is incomplete: {exc}. Reinstall the plugin (make install, or the zip "
                f"from Plugins > Manage and Install Plugins > Install from ZIP)."
            ) from None
        what = f"the Python package '{missing}'" if missing else "a Python package"
        if missing in RASTERIO_PACKAGES:
            raise QgsProcessingException(
                f"urbanmtl reads and writes rasters with rasterio, but {what} cannot be imported ({exc}). "
                f"{rasterio_hint()}"
            ) from None
        raise QgsProcessingException(
            f"urbanmtl needs TensorFlow 2.19 to run the network, but {what} cannot be imported ({exc}). "
            f"{install_hint()}"
        ) from None
    return predict


def _report(result: Any, feedback: QgsProcessingFeedback) -> None:
    """Log a summary (the engine's own messages reached the log already): timing and the largest LCZ classes."""
    feedback.pushInfo(f"Done in {result.seconds:.1f} s" + (" (input warped to 10 m UTM)" if result.warped else ""))
    rows = sorted(result.stats or [], key=lambda r: -float(r.get("area_km2", 0.0)))
    shown = [r for r in rows if float(r.get("area_km2", 0.0)) > 0][:5]
    if shown:
        feedback.pushInfo("Largest local climate zones: " + "; ".join(
            f"{r.get('letter', r.get('code'))} {r.get('name', '')}: {float(r['area_km2']):.2f} km²" for r in shown
        ))
