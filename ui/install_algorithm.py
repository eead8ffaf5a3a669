"""Processing algorithm urbanmtl:install_engine (also Raster > urbanmtl > Install engine…): installs the packages the
engine process imports (LiteRT and rasterio for mapping; with TRAINING, TensorFlow's CPU build, Keras and scikit-learn
as well) for QGIS's own Python into a folder of the QGIS profile, with pip (ui.install). Nothing outside that folder
changes; a failed install keeps the previous one and says why in one sentence."""

from __future__ import annotations

import platform
from typing import Any, Optional

from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFolder,
    QgsProcessingParameterBoolean,
)

from .algorithm_base import UrbanmtlAlgorithm
from .engine_python import engine_folder, qgis_python
from .install import install_engine
from .interpreter import EngineError, Interpreter, child_environment, probe


class InstallEngineAlgorithm(UrbanmtlAlgorithm):
    """Install the urbanmtl engine for QGIS's own Python."""

    TRAINING = "TRAINING"
    FOLDER = "FOLDER"
    README_SECTION = "install"

    def name(self) -> str:
        return "install_engine"

    def displayName(self) -> str:
        return self.tr("Install engine")

    def tags(self) -> list[str]:
        return self.tr("install,engine,pip,litert,tensorflow,packages,setup").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "<p>Installs what urbanmtl's engine needs for QGIS's own Python, with pip, into a folder of your QGIS "
            "profile (urbanmtl/engine-py3.x): LiteRT (ai-edge-litert) and rasterio for mapping, about 20 MB to "
            "download. Nothing else changes: not QGIS's Python, not your user site-packages. Only the engine process "
            "that maps (and trains) uses the folder.</p>"
            "<p><b>Also install what training needs</b> adds TensorFlow (CPU), Keras and scikit-learn for "
            "<i>Train LCZ model from training areas</i>: several hundred MB; the log says the exact size before "
            "anything downloads.</p>"
            "<p>Needs internet access to the Python package index. The packages QGIS's Python already has (numpy "
            "above all) keep their versions. If anything fails, the previous engine stays as it was and the log "
            "says why.</p>")

    def initAlgorithm(self, config: Optional[dict[str, Any]] = None) -> None:
        self.addParameter(QgsProcessingParameterBoolean(
            self.TRAINING, self.tr("Also install what training needs (TensorFlow CPU, Keras, scikit-learn; several "
                                   "hundred MB)"), False))
        self.addOutput(QgsProcessingOutputFolder(self.FOLDER, self.tr("Engine folder")))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        training = self.parameterAsBool(parameters, self.TRAINING, context)
        own = qgis_python()
        if own is None:
            raise QgsProcessingException(self.tr(
                "QGIS's own Python was not found, so the engine cannot be installed for it."))
        folder = engine_folder(QgsApplication.qgisSettingsDirPath(), platform.python_version())
        interpreter = Interpreter(own.path, self.tr("QGIS's own Python"), dict(own.env), str(folder))
        try:
            info = probe(own.path, child_environment(interpreter))
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushInfo(self.tr("Installing the urbanmtl engine for {python} into {folder}").format(
            python=own.path, folder=folder))
        try:
            done = install_engine(own.path, folder, training, feedback.pushConsoleInfo, feedback.isCanceled,
                                  managed=info.managed, env_base=child_environment(interpreter))
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushInfo(self.tr("The engine is ready: {what}.").format(
            what=", ".join(done["installed"]) or self.tr("every package was there already")))
        return {self.FOLDER: str(folder)}
