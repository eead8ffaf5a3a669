"""Processing provider 'urbanmtl': registers the mapping, the training and the engine-install algorithm with QGIS
Processing."""

from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .algorithm import MapHseLczAlgorithm
from .algorithm_base import ICON_PATH
from .install_algorithm import InstallEngineAlgorithm
from .train_algorithm import TrainFromPolygonsAlgorithm


def plugin_version() -> str:
    """The version in metadata.txt (the plugin folder's root), or "" when it cannot be read."""
    metadata = os.path.join(os.path.dirname(os.path.dirname(__file__)), "metadata.txt")
    try:
        with open(metadata, encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition("=")
                if key.strip() == "version":
                    return value.strip()
    except OSError:
        pass
    return ""


class UrbanMTLProvider(QgsProcessingProvider):
    """Provider id 'urbanmtl' with three algorithms: urbanmtl:map_hse_lcz, urbanmtl:train_from_polygons and
    urbanmtl:install_engine."""

    def id(self) -> str:
        return "urbanmtl"

    def name(self) -> str:
        return "urbanmtl"

    def longName(self) -> str:
        version = plugin_version()
        if not version:
            return self.name()
        return QCoreApplication.translate("UrbanMTLProvider", "urbanmtl {version}: settlement density and local "
                                          "climate zones").format(version=version)

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def svgIconPath(self) -> str:
        return ICON_PATH

    def versionInfo(self) -> str:
        return plugin_version()

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(MapHseLczAlgorithm())
        self.addAlgorithm(TrainFromPolygonsAlgorithm())
        self.addAlgorithm(InstallEngineAlgorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        # The engine writes GeoTIFF only; offering other formats in the dialog would mislabel the files.
        return ["tif"]
