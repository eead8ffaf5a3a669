"""What every urbanmtl Processing algorithm shares: no group inside the provider, the plugin's icon, a help link
into the README and translation under the algorithm's class name. Subclasses give their name, display name,
tags, help text, parameters and processAlgorithm."""

from __future__ import annotations

import os

from qgis.core import QgsProcessingAlgorithm
from qgis.PyQt.QtCore import QCoreApplication, QUrl
from qgis.PyQt.QtGui import QIcon

from .help import README_PATH

ICON_PATH = os.path.join(os.path.dirname(__file__), "icons", "urbanmtl.svg")


class UrbanmtlAlgorithm(QgsProcessingAlgorithm):
    #: The README section (its anchor) the help links to; empty: the top of the README.
    README_SECTION = ""

    def tr(self, text: str) -> str:
        return QCoreApplication.translate(type(self).__name__, text)

    def group(self) -> str:
        return ""

    def groupId(self) -> str:
        return ""

    def helpUrl(self) -> str:
        url = QUrl.fromLocalFile(README_PATH).toString()
        return f"{url}#{self.README_SECTION}" if self.README_SECTION else url

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def svgIconPath(self) -> str:
        return ICON_PATH

    def createInstance(self) -> "UrbanmtlAlgorithm":
        return type(self)()
