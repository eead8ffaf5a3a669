"""Styles of the urbanmtl outputs: HSE colour ramp, LCZ legend, confidence ramp, as live renderers and QML sidecars."""

from __future__ import annotations

import os
from collections import deque
from typing import Callable, Optional

from qgis.core import (
    QgsColorRampLegendNodeSettings,
    QgsColorRampShader,
    QgsLayerTree,
    QgsLayerTreeLayer,
    QgsMapLayerLegendUtils,
    QgsGradientColorRamp,
    QgsGradientStop,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProject,
    QgsRasterLayer,
    QgsRasterRenderer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.PyQt.QtCore import QCoreApplication, QTimer
from qgis.PyQt.QtGui import QColor

from ..core.common.lcz import CODES, COLORS, label

#: The output kinds this module styles, named as in core.predict (PredictResult.hse_path, ...).
HSE, LCZ, CONFIDENCE = "hse", "lcz", "confidence"
KINDS: tuple[str, ...] = (HSE, LCZ, CONFIDENCE)

#: HSE density 0..1 (fraction of built-up/impervious surface): 0 fully transparent, so the image underneath
#: shows where nothing is built, then light to dark red. (value, colour as #AARRGGBB or #RRGGBB, legend label).
HSE_RAMP: tuple[tuple[float, str, str], ...] = (
    (0.0, "#00fff5f0", "0 (none)"),
    (0.25, "#fcbba1", "0.25"),
    (0.5, "#fb6a4a", "0.5"),
    (0.75, "#cb181d", "0.75"),
    (1.0, "#67000d", "1 (fully built-up)"),
)

#: LCZ confidence = the winning class probability, 1/17..1: light grey (unsure) to black (sure).
CONFIDENCE_RAMP: tuple[tuple[float, str, str], ...] = (
    (0.0, "#f7f7f7", "0 (uncertain)"),
    (0.25, "#cccccc", "0.25"),
    (0.5, "#969696", "0.5"),
    (0.75, "#525252", "0.75"),
    (1.0, "#000000", "1 (certain)"),
)

#: The first line of each output's legend in the Layers panel (it would otherwise be the band name).
LEGEND_TITLES: dict[str, str] = {
    HSE: "built-up fraction",
    LCZ: "local climate zone",
    CONFIDENCE: "LCZ confidence (probability of the class shown)",
}


def tr(text: str) -> str:
    return QCoreApplication.translate("urbanmtl", text)


def _pseudocolor(layer: QgsRasterLayer, ramp: tuple[tuple[float, str, str], ...]) -> QgsRasterRenderer:
    """Single-band pseudocolour renderer interpolating `ramp` (value, colour, legend label) over band 1.

    Values outside the ramp (e.g. a -1 nodata not declared as such) are clipped, i.e. not drawn; declared
    nodata is transparent anyway.
    """
    lo, hi = ramp[0][0], ramp[-1][0]
    function = QgsColorRampShader(lo, hi)
    function.setColorRampType(QgsColorRampShader.Interpolated)
    function.setClassificationMode(QgsColorRampShader.Continuous)
    function.setClip(True)
    # The source ramp is what the style dock shows and re-classifies with, so keep it identical to the items.
    stops = [QgsGradientStop((v - lo) / (hi - lo), QColor(c)) for v, c, _ in ramp[1:-1]]
    function.setSourceColorRamp(QgsGradientColorRamp(QColor(ramp[0][1]), QColor(ramp[-1][1]), False, stops))
    function.setColorRampItemList([QgsColorRampShader.ColorRampItem(v, QColor(c), tr(text)) for v, c, text in ramp])
    # One legend line per stop (0, 0.25, ... 1) rather than a bar labelled only at its ends.
    legend = QgsColorRampLegendNodeSettings()
    legend.setUseContinuousLegend(False)
    function.setLegendSettings(legend)
    shader = QgsRasterShader(lo, hi)
    shader.setRasterShaderFunction(function)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(lo)
    renderer.setClassificationMax(hi)
    return renderer


def hse_renderer(layer: QgsRasterLayer) -> QgsRasterRenderer:
    """Renderer of an HSE density raster (band 1, float 0..1, nodata transparent)."""
    return _pseudocolor(layer, HSE_RAMP)


def confidence_renderer(layer: QgsRasterLayer) -> QgsRasterRenderer:
    """Renderer of an LCZ confidence raster (band 1, winning probability 0..1, nodata transparent)."""
    return _pseudocolor(layer, CONFIDENCE_RAMP)


def lcz_renderer(layer: QgsRasterLayer) -> QgsRasterRenderer:
    """Paletted renderer of an LCZ code raster (band 1, codes 1..17) with the legend "2 Compact midrise", ....

    Code 0 (no data) has no class, so the paletted renderer leaves it transparent.
    """
    classes = [QgsPalettedRasterRenderer.Class(code, QColor(COLORS[code - 1]), label(code)) for code in CODES]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)


RENDERERS: dict[str, Callable[[QgsRasterLayer], QgsRasterRenderer]] = {
    HSE: hse_renderer,
    LCZ: lcz_renderer,
    CONFIDENCE: confidence_renderer,
}


def apply_style(layer: QgsRasterLayer, kind: str) -> None:
    """Give `layer` the renderer of output `kind` (one of KINDS) and repaint it."""
    if kind not in RENDERERS:
        raise ValueError(f"Unknown urbanmtl output kind '{kind}'; expected one of {', '.join(KINDS)}.")
    layer.setRenderer(RENDERERS[kind](layer))
    layer.triggerRepaint()
    # The layer tree rebuilds legend nodes on this signal; without it an already-loaded layer keeps its old legend.
    layer.emitStyleChanged()


def sidecar_path(raster_path: str) -> str:
    """The .qml QGIS loads automatically as the default style of `raster_path` (same folder, same base name)."""
    return os.path.splitext(raster_path)[0] + ".qml"


def write_sidecar_style(raster_path: str, kind: str) -> str:
    """Write the style of output `kind` next to `raster_path` as a .qml and return the .qml path.

    QGIS applies it whenever the file is opened later (drag and drop, Add Raster Layer, a qgis_process
    output). Raises OSError when the raster cannot be opened or the .qml cannot be written.
    """
    layer = QgsRasterLayer(raster_path, os.path.basename(raster_path), "gdal")
    if not layer.isValid():
        raise OSError(f"QGIS cannot open '{raster_path}' to style it.")
    apply_style(layer, kind)
    qml = sidecar_path(raster_path)
    message, ok = layer.saveNamedStyle(qml, QgsMapLayer.Symbology | QgsMapLayer.Rendering)
    if not ok or not os.path.exists(qml):
        raise OSError(f"Cannot write the style file '{qml}': {message}")
    return qml


#: Post-processors waiting for Processing to load their layers. The context keeps only a C++ pointer and the
#: algorithm object that made them is deleted as soon as its run ends (QgsProcessingAlgorithm.run works on a
#: copy), so without a Python reference their Python half would be gone by the time the layers load. Loading
#: follows the run directly, so a bounded history is enough.
_ALIVE: deque = deque(maxlen=256)


def style_when_loaded(context: QgsProcessingContext, path: str, kind: str, name: Optional[str] = None) -> bool:
    """Style output `path` as `kind` when Processing loads it into the project; False if it will not be loaded."""
    if not context.willLoadLayerOnCompletion(path):
        return False
    processor = StylePostProcessor(kind, name)
    _ALIVE.append(processor)
    context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)
    return True


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Names and styles an output layer when Processing loads it into the project (runs in the main thread):
    the renderer of its kind, the legend title (LEGEND_TITLES) and the legend shown expanded."""

    def __init__(self, kind: str, name: Optional[str] = None) -> None:
        super().__init__()
        self.kind = kind
        self.name = name

    def postProcessLayer(
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if not isinstance(layer, QgsRasterLayer):
            return
        if self.name:
            layer.setName(self.name)
        project = context.project() if context is not None and context.project() is not None else None
        node = (project or QgsProject.instance()).layerTreeRoot().findLayer(layer.id())
        if node is not None:
            set_legend_title(node, self.kind)
        # After the title: restyling makes the Layers panel rebuild the legend, with the title.
        apply_style(layer, self.kind)
        if node is not None:
            # The desktop's Layers panel collapses legends of 10 or more lines when it (re)builds them, as it
            # just did; the 17 LCZ classes are the point of the layer, so open them again, now and once the
            # panel has caught up.
            node.setExpanded(True)
            layer_id = layer.id()
            root = node.parent()
            while root is not None and root.parent() is not None:
                root = root.parent()

            def expand() -> None:
                again = root.findLayer(layer_id) if root is not None else None
                if again is not None:
                    again.setExpanded(True)

            QTimer.singleShot(0, expand)


def set_legend_title(node: "QgsLayerTreeLayer", kind: str) -> None:
    """Show LEGEND_TITLES[kind] instead of the band name as the first legend line of layer tree node `node`."""
    if QgsLayerTree.isLayer(node) and kind in LEGEND_TITLES:
        QgsMapLayerLegendUtils.setLegendNodeUserLabel(node, 0, tr(LEGEND_TITLES[kind]))
