"""The QGIS plugin object: registers the urbanmtl Processing provider, never breaking QGIS start-up."""

from __future__ import annotations

import traceback
from typing import Any, Optional

from qgis.core import Qgis, QgsApplication, QgsMessageLog

LOG_TAG = "urbanmtl"


def log_exception(what: str) -> None:
    """Write the current exception, with its traceback, to the QGIS message log under the tag 'urbanmtl'."""
    QgsMessageLog.logMessage(f"{what}\n{traceback.format_exc()}", LOG_TAG, Qgis.Critical)


class UrbanMTLPlugin:
    """Adds the Processing provider; in the desktop (initGui) and in qgis_process (initProcessing) alike."""

    def __init__(self, iface: Optional[Any]) -> None:
        # iface is None under qgis_process.
        self.iface = iface
        self.provider: Optional[Any] = None

    def initProcessing(self) -> None:
        if self.provider is not None:
            return
        try:
            from .ui.provider import UrbanMTLProvider

            provider = UrbanMTLProvider()
            if not QgsApplication.processingRegistry().addProvider(provider):
                QgsMessageLog.logMessage(
                    "The urbanmtl Processing provider could not be registered (is another provider called "
                    "'urbanmtl' loaded?).", LOG_TAG, Qgis.Critical)
                return
            self.provider = provider
        except Exception:  # A broken plugin must not take QGIS down with it.
            log_exception("The urbanmtl Processing provider failed to load.")

    def initGui(self) -> None:
        # The desktop calls initGui, not initProcessing; the algorithm lives in the Processing toolbox.
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is None:
            return
        try:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        except Exception:
            log_exception("The urbanmtl Processing provider failed to unload.")
        self.provider = None
