"""Run by the QGIS desktop itself (`qgis --code qgis_session.py`, see harness.py): a user's session, scripted.

Reads the JSON file named by $URBANMTL_DESKTOP_CONFIG:
  report       the JSON report to write (required)
  scene        the Sentinel-2 GeoTIFF to map; layer_name: its name in the project
  outputs      folder for hse.tif, lcz.tif, confidence.tif
  screenshots  folder for PNGs of the dialog and the result, or null
  timeout_s    give up (report "timeout") after this many seconds

Steps: reload the plugin with Python warnings recorded, check its menu entry and toolbar button, open its
dialog from the menu entry, add the scene to the project, run urbanmtl:map_hse_lcz as the dialog does (a
QgsProcessingAlgRunnerTask on QgsApplication.taskManager(), results loaded by Processing's
handleAlgorithmResults), wait in the event loop, describe the layers it loaded, write the report, quit QGIS.
"""

import json
import os
import sys
import time
import traceback
import warnings

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsContrastEnhancement,
    QgsLayerTreeModel,
    QgsMapLayerLegendUtils,
    QgsMultiBandColorRenderer,
    QgsProcessingAlgRunnerTask,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
)
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QDockWidget, QMenu, QSplitter
from qgis.utils import iface

import qgis.utils

ALGORITHM_ID = "urbanmtl:map_hse_lcz"
PLUGIN = "urbanmtl"

CONFIG = json.load(open(os.environ["URBANMTL_DESKTOP_CONFIG"], encoding="utf-8"))
REPORT = {"stage": "started", "started": time.time()}
MESSAGES = []
STATE = {}


def on_message(message, tag, level):
    MESSAGES.append({"tag": tag, "level": int(level), "message": message})


QgsApplication.messageLog().messageReceived.connect(on_message)


def write_report(stage):
    REPORT["stage"] = stage
    REPORT["seconds"] = time.time() - REPORT["started"]
    REPORT["messages"] = MESSAGES
    REPORT["heavy_modules_in_qgis"] = sorted({"tensorflow", "keras", "rasterio"} & set(sys.modules))
    with open(CONFIG["report"] + ".part", "w", encoding="utf-8") as out:
        json.dump(REPORT, out, indent=1, default=str)
    os.replace(CONFIG["report"] + ".part", CONFIG["report"])


def quit_qgis(code=0):
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(0, lambda: QgsApplication.exit(code))


def fail(stage):
    REPORT["error"] = traceback.format_exc()
    write_report(stage)
    quit_qgis(2)


def settle(seconds=0.5):
    """Let the event loop run (repaints, queued signals) for a moment."""
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def shot(widget, name):
    folder = CONFIG.get("screenshots")
    if folder:
        settle(1.0)
        path = os.path.join(folder, name)
        widget.grab().save(path)
        REPORT.setdefault("screenshots", []).append(path)


def opengl_libraries():
    """The OpenGL driver and LLVM libraries mapped into this (the QGIS) process."""
    with open("/proc/self/maps", encoding="utf-8") as maps:
        names = {line.split()[-1] for line in maps if "/" in line}
    return sorted(os.path.basename(n) for n in names if "swrast_dri" in n or "libLLVM" in n or "libGLX_mesa" in n)


def reload_plugin_recording_warnings():
    """Unload and load the plugin again (the code QGIS ran at start-up), recording every Python warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reloaded = qgis.utils.reloadPlugin(PLUGIN)
    REPORT["reloaded"] = bool(reloaded)
    REPORT["load_warnings"] = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught
                               if PLUGIN in str(w.filename) or "urbanmtl" in str(w.message)]


def menu_entry():
    """The plugin's action in Raster > urbanmtl, and whether the raster toolbar shows it."""
    for action in iface.rasterMenu().actions():
        menu = action.menu()
        if isinstance(menu, QMenu) and menu.title().replace("&", "") == PLUGIN:
            for entry in menu.actions():
                REPORT.setdefault("menu", []).append(entry.text())
                if entry.objectName() == "urbanmtlMapHseLcz":
                    REPORT["toolbar"] = entry in iface.rasterToolBar().actions()
                    return entry
    return None


def true_colour(layer):
    """Bands 4, 3, 2 (B4, B3, B2 of the L1C stack) stretched to 2-98 %."""
    renderer = QgsMultiBandColorRenderer(layer.dataProvider(), 4, 3, 2)
    layer.setRenderer(renderer)
    layer.setContrastEnhancement(QgsContrastEnhancement.StretchToMinimumMaximum,
                                 QgsRasterMinMaxOrigin.CumulativeCut)
    layer.triggerRepaint()


class Feedback(QgsProcessingFeedback):
    """Records what the dialog's log panel would show (called from the task's thread, too)."""

    def __init__(self):
        super().__init__()
        self.lines = []
        self.progress = []
        self.progressChanged.connect(lambda value: self.progress.append(value))

    def pushInfo(self, text):
        self.lines.append(text)
        super().pushInfo(text)

    def pushWarning(self, text):
        self.lines.append("WARNING " + text)
        super().pushWarning(text)

    def reportError(self, text, fatalError=False):
        self.lines.append("ERROR " + text)
        super().reportError(text, fatalError)


def describe_layers(scene_id):
    root = QgsProject.instance().layerTreeRoot()
    model = QgsLayerTreeModel(root)
    layers = []
    for layer in QgsProject.instance().mapLayers().values():
        if layer.id() == scene_id:
            continue
        node = root.findLayer(layer.id())
        legend = [n.data(Qt.DisplayRole) for n in model.layerLegendNodes(node)] if node else []
        layers.append({
            "name": layer.name(), "valid": layer.isValid(), "source": layer.source(),
            "renderer": layer.renderer().type() if isinstance(layer, QgsRasterLayer) and layer.renderer() else None,
            "expanded": bool(node and node.isExpanded()),
            "legend_title": QgsMapLayerLegendUtils.legendNodeUserLabel(node, 0) if node else None,
            "legend": legend,
        })
    return layers


def result_screenshots(scene, layers):
    window = iface.mainWindow()
    browser = window.findChild(QDockWidget, "Browser")
    if browser is not None:
        browser.hide()
    legend = window.findChild(QDockWidget, "Layers")
    if legend is not None:
        window.resizeDocks([legend], [390], Qt.Horizontal)
    canvas = iface.mapCanvas()
    canvas.setExtent(scene.extent())
    canvas.refreshAllLayers()
    settle(1.0)
    canvas.waitWhileRendering()
    shot(window, "qgis_result.png")
    root = QgsProject.instance().layerTreeRoot()
    for layer in layers:
        if layer.name().startswith("LCZ"):
            root.findLayer(layer.id()).setItemVisibilityChecked(False)
    canvas.refreshAllLayers()
    settle(1.0)
    canvas.waitWhileRendering()
    shot(window, "qgis_result_hse.png")


def on_executed(ok, results):
    try:
        STATE["executed_at"] = time.time()
        from processing.gui.Postprocessing import handleAlgorithmResults

        task, context, feedback = STATE["task"], STATE["context"], STATE["feedback"]
        REPORT.update(ok=bool(ok), results={k: str(v) for k, v in (results or {}).items()},
                      run_seconds=STATE["executed_at"] - STATE["run_started"], feedback=feedback.lines,
                      progress_max=max(feedback.progress or [0]))
        if ok:
            handleAlgorithmResults(STATE["algorithm"], context, feedback, True, STATE["parameters"])
        settle(0.5)
        REPORT["layers"] = describe_layers(STATE["scene"].id())
        REPORT["outputs_exist"] = {name: os.path.exists(path) for name, path in STATE["paths"].items()}
        if CONFIG.get("screenshots") and ok:
            outputs = [l for l in QgsProject.instance().mapLayers().values() if l.id() != STATE["scene"].id()]
            result_screenshots(STATE["scene"], outputs)
        write_report("done")
        quit_qgis(0)
    except Exception:
        fail("results")


def run_algorithm():
    """As processing/gui/AlgorithmDialog.py runs an algorithm: a context from dataobjects.createContext,
    outputs loaded into the project, a QgsProcessingAlgRunnerTask on the task manager."""
    from processing.tools import dataobjects

    scene = QgsRasterLayer(CONFIG["scene"], CONFIG.get("layer_name", "Sentinel-2"), "gdal")
    if not scene.isValid():
        raise RuntimeError(f"QGIS cannot open the scene {CONFIG['scene']}")
    true_colour(scene)
    QgsProject.instance().addMapLayer(scene)
    STATE["scene"] = scene
    iface.mapCanvas().setExtent(scene.extent())

    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM_ID)
    feedback = Feedback()
    context = dataobjects.createContext(feedback)
    out = CONFIG["outputs"]
    paths = {"OUTPUT_HSE": os.path.join(out, "hse.tif"), "OUTPUT_LCZ": os.path.join(out, "lcz.tif"),
             "OUTPUT_CONFIDENCE": os.path.join(out, "confidence.tif")}
    parameters = {"INPUT": scene.id()}
    for name, path in paths.items():
        parameters[name] = QgsProcessingOutputLayerDefinition(path, QgsProject.instance())
    ok, message = algorithm.checkParameterValues(parameters, context)
    if not ok:
        raise RuntimeError(message)
    task = QgsProcessingAlgRunnerTask(algorithm, parameters, context, feedback)
    STATE.update(task=task, context=context, feedback=feedback, algorithm=algorithm, parameters=parameters,
                 paths=paths, run_started=time.time())
    task.executed.connect(on_executed)
    QgsApplication.taskManager().addTask(task)
    REPORT["task_added"] = True
    write_report("running")


def open_dialog_from_menu(entry):
    """Trigger the menu entry; describe (and photograph) the dialog it opens, then close it."""
    entry.trigger()
    settle(1.0)
    dialog = qgis.utils.plugins[PLUGIN].dialog
    REPORT["dialog"] = None if dialog is None else {
        "title": dialog.windowTitle(), "visible": dialog.isVisible(),
        "algorithm": dialog.algorithm().id() if hasattr(dialog, "algorithm") else None,
    }
    if dialog is not None and CONFIG.get("screenshots"):
        scene = STATE.get("scene")
        dialog.setParameters({"INPUT": scene.id() if scene else CONFIG["scene"]})
        dialog.resize(1100, 800)
        splitter = dialog.findChild(QSplitter)
        if splitter is not None:
            splitter.setSizes([640, 460])           # a wider help panel
        shot(dialog, "qgis_dialog.png")
    if dialog is not None:
        dialog.close()


def watchdog():
    if "executed_at" not in STATE:
        REPORT["feedback"] = STATE["feedback"].lines if "feedback" in STATE else []
        write_report("timeout")
        quit_qgis(3)


def main():
    try:
        REPORT["qgis_version"] = Qgis.QGIS_VERSION
        REPORT["opengl"] = opengl_libraries()
        REPORT["plugin_started_by_qgis"] = PLUGIN in qgis.utils.plugins
        reload_plugin_recording_warnings()
        REPORT["plugin_loaded"] = PLUGIN in qgis.utils.plugins
        entry = menu_entry()
        REPORT["menu_entry"] = entry is not None
        scene = QgsRasterLayer(CONFIG["scene"], CONFIG.get("layer_name", "Sentinel-2"), "gdal")
        REPORT["scene_valid"] = scene.isValid()
        if CONFIG.get("screenshots"):
            iface.mainWindow().resize(1280, 900)
        if entry is not None:
            if CONFIG.get("screenshots"):
                # The dialog is photographed with the scene already chosen as its input.
                true_colour(scene)
                QgsProject.instance().addMapLayer(scene)
                STATE["scene"] = scene
                open_dialog_from_menu(entry)
                QgsProject.instance().removeMapLayer(scene.id())
                STATE.pop("scene")
            else:
                open_dialog_from_menu(entry)
        write_report("loaded")
        run_algorithm()
        QTimer.singleShot(int(1000 * CONFIG.get("timeout_s", 200)), watchdog)
    except Exception:
        fail("setup")


# QGIS runs this file right after start-up; the work starts once the main window is up and idle.
QTimer.singleShot(500, main)
