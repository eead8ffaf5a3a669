"""In the desktop, the offer to install the engine when an algorithm finds it missing: the algorithm (in Processing's
worker thread) emits a signal that a QObject living in the main thread receives, and the main thread asks the user
and opens Install engine's dialog. Under qgis_process nothing registers it, and nothing is offered: the algorithm's
one sentence says what to run."""

from __future__ import annotations

from typing import Any, Optional

from qgis.PyQt.QtCore import QCoreApplication, QObject, pyqtSignal

from .interpreter import INSTALL_ALGORITHM


def tr(text: str) -> str:
    return QCoreApplication.translate("urbanmtl", text)


class InstallOffer(QObject):
    """Made by the plugin in the main thread (ui.plugin's initGui); shows at most one question at a time."""

    asked = pyqtSignal(str, str)

    def __init__(self, window: Any) -> None:
        super().__init__()
        self.window = window
        self.showing = False
        self.asked.connect(self._ask)

    def _ask(self, message: str, purpose: str) -> None:
        from qgis.PyQt.QtWidgets import QMessageBox

        if self.showing:
            return
        self.showing = True
        try:
            answer = QMessageBox.question(
                self.window, tr("urbanmtl engine"), message + "\n\n" + tr("Open Install engine now?"),
                QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
            if answer == QMessageBox.Yes:
                import processing

                processing.execAlgorithmDialog(INSTALL_ALGORITHM, {"TRAINING": purpose == "training"})
        finally:
            self.showing = False


_OFFER: list[InstallOffer] = []


def register(offer: Optional[InstallOffer]) -> None:
    """The desktop's offer (None: none, e.g. when the plugin unloads)."""
    _OFFER[:] = [offer] if offer is not None else []


def offer_install(message: str, purpose: str) -> bool:
    """Ask the desktop user to run Install engine (queued to the main thread); False where there is no desktop."""
    if not _OFFER:
        return False
    _OFFER[0].asked.emit(message, purpose)
    return True
