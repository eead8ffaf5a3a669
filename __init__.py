"""urbanmtl QGIS plugin: settlement density (HSE) and local climate zones (LCZ) from Sentinel-2.

QGIS imports this folder as the package `urbanmtl` and calls classFactory; nothing heavy is imported here,
so the engine's TensorFlow is only loaded when the algorithm runs.
"""


def classFactory(iface):  # noqa: N802 (name fixed by QGIS)
    """The plugin object for QGIS (iface is None under qgis_process)."""
    try:
        from .plugin import UrbanMTLPlugin

        return UrbanMTLPlugin(iface)
    except Exception:
        # An import error here would otherwise abort QGIS's plugin loading with a dialog; log and stay inert.
        import traceback

        from qgis.core import Qgis, QgsMessageLog

        QgsMessageLog.logMessage(
            "urbanmtl failed to load:\n" + traceback.format_exc(), "urbanmtl", Qgis.Critical)
        return _InertPlugin()


class _InertPlugin:
    """Stands in for the plugin when it cannot load, so QGIS start-up goes on (see the message log)."""

    def initGui(self) -> None:  # noqa: N802
        pass

    def initProcessing(self) -> None:  # noqa: N802
        pass

    def unload(self) -> None:
        pass
