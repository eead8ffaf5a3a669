"""The QGIS plugin object: registers the urbanmtl Processing provider and, in the desktop, a menu entry and a
toolbar button that open the mapping algorithm's dialog, a menu entry for Install engine, and the offer to run it
when an algorithm finds the engine missing (ui.install_offer); it never breaks QGIS start-up."""

from __future__ import annotations

import os
import traceback
from typing import Any, Optional

from qgis.core import Qgis, QgsApplication, QgsMessageLog
from qgis.PyQt.QtCore import QCoreApplication

LOG_TAG = "urbanmtl"
ALGORITHM_ID = "urbanmtl:map_hse_lcz"
INSTALL_ID = "urbanmtl:install_engine"
#: The submenu of the Raster menu the entry goes into: Raster > urbanmtl.
MENU = "urbanmtl"
ICON_PATH = os.path.join(os.path.dirname(__file__), "ui", "icons", "urbanmtl.svg")


def log_exception(what: str) -> None:
    """Write the current exception, with its traceback, to the QGIS message log under the tag 'urbanmtl'."""
    QgsMessageLog.logMessage(f"{what}\n{traceback.format_exc()}", LOG_TAG, Qgis.Critical)


class UrbanMTLPlugin:
    """Adds the Processing provider; in the desktop (initGui) and in qgis_process (initProcessing) alike."""

    def __init__(self, iface: Optional[Any]) -> None:
        # iface is None under qgis_process.
        self.iface = iface
        self.provider: Optional[Any] = None
        self.action: Optional[Any] = None
        self.install_action: Optional[Any] = None
        self.dialog: Optional[Any] = None

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("UrbanMTLPlugin", text)

    def initProcessing(self) -> None:
        if self.provider is not None:
            return
        try:
            from .ui.provider import UrbanMTLProvider

            provider = UrbanMTLProvider()
            if not QgsApplication.processingRegistry().addProvider(provider):
                QgsMessageLog.logMessage(self.tr(
                    "The urbanmtl Processing provider could not be registered (is another provider called "
                    "'urbanmtl' loaded?)."), LOG_TAG, Qgis.Critical)
                return
            self.provider = provider
        except Exception:  # A broken plugin must not take QGIS down with it.
            log_exception(self.tr("The urbanmtl Processing provider failed to load."))

    def initGui(self) -> None:
        # The desktop calls initGui, not initProcessing.
        self.initProcessing()
        if self.iface is None or self.provider is None:
            return
        try:
            from qgis.PyQt.QtGui import QIcon
            from qgis.PyQt.QtWidgets import QAction

            action = QAction(QIcon(ICON_PATH), self.tr("Map settlement density and local climate zones…"),
                             self.iface.mainWindow())
            action.setObjectName("urbanmtlMapHseLcz")
            action.setToolTip(self.tr("urbanmtl: map settlement density (HSE) and local climate zones (LCZ) from a "
                                      "Sentinel-2 image"))
            action.triggered.connect(self.open_dialog)
            self.iface.addPluginToRasterMenu(MENU, action)
            self.iface.addRasterToolBarIcon(action)
            self.action = action
            install = QAction(QIcon(ICON_PATH), self.tr("Install engine…"), self.iface.mainWindow())
            install.setObjectName("urbanmtlInstallEngine")
            install.setToolTip(self.tr("urbanmtl: install the packages its engine needs for QGIS's own Python "
                                       "(urbanmtl:install_engine)"))
            install.triggered.connect(self.open_install_dialog)
            self.iface.addPluginToRasterMenu(MENU, install)
            self.install_action = install
            from .ui.install_offer import InstallOffer, register

            register(InstallOffer(self.iface.mainWindow()))
        except Exception:
            log_exception(self.tr("The urbanmtl menu entry could not be added."))

    def open_install_dialog(self) -> None:
        """Install engine's Processing dialog."""
        try:
            import processing

            processing.execAlgorithmDialog(INSTALL_ID, {})
        except Exception:
            log_exception(self.tr("The Install engine dialog could not be opened."))

    def open_dialog(self) -> Optional[Any]:
        """Show the algorithm's Processing dialog (non-modal, like the Processing Toolbox does) and return it."""
        try:
            import processing

            if self.dialog is not None:
                try:
                    if self.dialog.isVisible():
                        self.dialog.raise_()
                        self.dialog.activateWindow()
                        return self.dialog
                except RuntimeError:  # deleted on the C++ side
                    pass
            self.dialog = processing.createAlgorithmDialog(ALGORITHM_ID)
            if self.dialog is not None:
                self.dialog.show()
            return self.dialog
        except Exception:
            log_exception(self.tr("The urbanmtl dialog could not be opened."))
            return None

    def unload(self) -> None:
        try:
            from .ui.install_offer import register

            register(None)
        except Exception:
            log_exception(self.tr("The urbanmtl install offer failed to unload."))
        if self.install_action is not None:
            try:
                if self.iface is not None:
                    self.iface.removePluginRasterMenu(MENU, self.install_action)
                self.install_action.deleteLater()
            except Exception:
                log_exception(self.tr("The urbanmtl menu entry failed to unload."))
            self.install_action = None
        if self.action is not None:
            try:
                if self.iface is not None:
                    self.iface.removePluginRasterMenu(MENU, self.action)
                    self.iface.removeRasterToolBarIcon(self.action)
                self.action.deleteLater()
            except Exception:
                log_exception(self.tr("The urbanmtl menu entry failed to unload."))
            self.action = None
        if self.dialog is not None:
            try:
                self.dialog.close()
                self.dialog.deleteLater()
            except (RuntimeError, AttributeError):
                pass
            self.dialog = None
        if self.provider is None:
            return
        try:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        except Exception:
            log_exception(self.tr("The urbanmtl Processing provider failed to unload."))
        self.provider = None
