"""Run by the QGIS desktop itself (`qgis --code tools/train_session.py`, started by tools/screenshots.py through
tests/desktop/harness.py): the training algorithm's screenshots, taken in a scripted user's session.

Reads the JSON file named by $URBANMTL_DESKTOP_CONFIG:
  report       the JSON report to write (required)
  scene        the Sentinel-2 GeoTIFF (10 bands B2..B12); layer_name: its name in the project
  areas        the training areas (GeoPackage, class in the field `lcz`); areas_name: their name in the project
  outputs      the training run folder to create (new)
  epochs       EPOCHS of the run
  screenshots  folder for qgis_train_dialog.png and qgis_train_report.png
  timeout_s    give up (report "timeout") after this many seconds

Steps: add the scene (true colour) and the training areas (outlined in their LCZ colours) to the project, open the
algorithm's dialog with processing.createAlgorithmDialog as the toolbox does, fill it in, photograph it with its
help panel, press Run (the dialog runs the algorithm as a task, adds the accuracy report to the Processing Results
viewer and opens that panel), wait, then show the report in a web view (QtWebKit, as QGIS renders HTML) and
photograph it, write the report, quit QGIS. The dialog's log and the main window after the run (the training
areas over the image, the Results viewer) are photographed too, for the work folder only.
"""

import json
import os
import time
import traceback

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsContrastEnhancement,
    QgsFillSymbol,
    QgsMultiBandColorRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt, QTimer, QUrl
from qgis.PyQt.QtWidgets import QApplication, QDockWidget, QSplitter

from qgis.utils import iface

ALGORITHM_ID = "urbanmtl:train_from_polygons"

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
    with open(CONFIG["report"] + ".part", "w", encoding="utf-8") as out:
        json.dump(REPORT, out, indent=1, default=str)
    os.replace(CONFIG["report"] + ".part", CONFIG["report"])


def quit_qgis(code=0):
    # The layers go before QGIS does: removed while QGIS tears its window down, QGIS 3.22 may crash (the
    # active layer changes into the destroyed style dock).
    dialog = STATE.get("dialog")
    if dialog is not None:
        dialog.close()
    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(200, lambda: QgsApplication.exit(code))


def fail(stage):
    REPORT["error"] = traceback.format_exc()
    write_report(stage)
    quit_qgis(2)


def settle(seconds=0.5):
    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def shot(widget, name):
    settle(1.0)
    path = os.path.join(CONFIG["screenshots"], name)
    widget.grab().save(path)
    REPORT.setdefault("screenshots", []).append(path)


def lcz_legend():
    """{letter: (label, colour)} of the LCZ classes, from the plugin's core/lcz.py (numpy only)."""
    from urbanmtl.core.common import lcz

    return {lcz.LETTERS[code - 1]: (lcz.label(code), lcz.COLORS[code - 1]) for code in lcz.CODES}


def add_scene():
    scene = QgsRasterLayer(CONFIG["scene"], CONFIG.get("layer_name", "Sentinel-2"), "gdal")
    if not scene.isValid():
        raise RuntimeError(f"QGIS cannot open the scene {CONFIG['scene']}")
    # B4, B3, B2 of the 10-band stack (B2 B3 B4 B5 B6 B7 B8 B8A B11 B12), stretched 2-98 %.
    scene.setRenderer(QgsMultiBandColorRenderer(scene.dataProvider(), 3, 2, 1))
    scene.setContrastEnhancement(QgsContrastEnhancement.StretchToMinimumMaximum, QgsRasterMinMaxOrigin.CumulativeCut)
    QgsProject.instance().addMapLayer(scene)
    return scene


def add_areas():
    """The training areas, a light fill and a thick outline in the LCZ colour of their class over a dark halo."""
    areas = QgsVectorLayer(CONFIG["areas"], CONFIG.get("areas_name", "training areas"), "ogr")
    if not areas.isValid():
        raise RuntimeError(f"QGIS cannot open the training areas {CONFIG['areas']}")
    legend = lcz_legend()
    values = sorted({str(f["lcz"]) for f in areas.getFeatures()}, key=lambda v: list(legend).index(v))
    categories = []
    for value in values:
        label, colour = legend[value]
        symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": "20,20,20,255",
                                             "outline_width": "1.4", "joinstyle": "miter"})
        inner = QgsFillSymbol.createSimple({"color": colour, "outline_color": colour, "outline_width": "0.8",
                                            "joinstyle": "miter"})
        fill = inner.symbolLayer(0).color()
        fill.setAlpha(60)
        inner.symbolLayer(0).setColor(fill)
        symbol.appendSymbolLayer(inner.symbolLayer(0).clone())
        categories.append(QgsRendererCategory(value, symbol, label))
    areas.setRenderer(QgsCategorizedSymbolRenderer("lcz", categories))
    QgsProject.instance().addMapLayer(areas)
    REPORT["classes"] = values
    REPORT["polygons"] = areas.featureCount()
    return areas


def dialog_screenshot(scene, areas):
    """The dialog as the toolbox opens it, filled in, with its help panel."""
    import processing

    dialog = processing.createAlgorithmDialog(ALGORITHM_ID, {
        "INPUT": scene.id(), "POLYGONS": areas.id(), "FIELD": "lcz", "EPOCHS": CONFIG.get("epochs", 0),
        "OUTPUT_FOLDER": CONFIG["outputs"],
    })
    if dialog is None:
        raise RuntimeError(f"processing.createAlgorithmDialog({ALGORITHM_ID!r}) gave no dialog")
    dialog.show()
    dialog.resize(1100, 780)
    splitter = dialog.findChild(QSplitter)
    if splitter is not None:
        splitter.setSizes([620, 480])           # a wider help panel
    settle(1.0)
    REPORT["dialog"] = {"title": dialog.windowTitle(), "visible": dialog.isVisible()}
    shot(dialog, "qgis_train_dialog.png")
    return dialog


def report_screenshot(path):
    """The accuracy report as QGIS renders HTML (QtWebKit), in a window of its own as tall as the page."""
    from qgis.PyQt.QtWebKitWidgets import QWebView

    view = QWebView()
    view.setWindowTitle("Accuracy report")
    width = CONFIG.get("report_width", 900)
    view.resize(width, 600)
    loaded = {}
    view.loadFinished.connect(lambda ok: loaded.setdefault("ok", ok))
    view.load(QUrl.fromLocalFile(path))
    view.show()
    end = time.time() + 20
    while "ok" not in loaded and time.time() < end:
        settle(0.2)
    REPORT["report_loaded"] = loaded.get("ok")
    frame = view.page().mainFrame()
    for _ in range(3):                        # the page reflows at each size
        height = min(frame.contentsSize().height(), CONFIG.get("report_max_height", 1800))
        view.resize(width, height)
        settle(0.3)
    REPORT["report_size"] = [view.width(), view.height(), frame.contentsSize().height()]
    STATE["view"] = view
    shot(view, "qgis_train_report.png")
    view.close()


def main_window_screenshot():
    """QGIS after the run: the training areas over the image, the Results viewer listing the report."""
    window = iface.mainWindow()
    legend = window.findChild(QDockWidget, "Layers")
    if legend is not None:
        window.resizeDocks([legend], [300], Qt.Horizontal)
    canvas = iface.mapCanvas()
    canvas.refreshAllLayers()
    settle(1.0)
    canvas.waitWhileRendering()
    shot(window, "qgis_train_results.png")


def dialog_log(dialog):
    """The text of the dialog's Log tab."""
    from qgis.PyQt.QtWidgets import QTextEdit

    log = dialog.findChild(QTextEdit, "txtLog") if dialog is not None else None
    return log.toPlainText() if log is not None else None


def on_finished(ok, results):
    try:
        STATE["finished_at"] = time.time()
        dialog = STATE["dialog"]
        REPORT.update(ok=bool(ok), results={k: str(v) for k, v in (results or {}).items()},
                      run_seconds=STATE["finished_at"] - STATE["run_started"])
        settle(0.5)
        try:
            from processing.core.ProcessingResults import resultsList
            REPORT["results_viewer"] = [(r.name, r.filename) for r in resultsList.getResults()]
        except Exception:
            REPORT["results_viewer"] = None
        REPORT["log"] = dialog_log(dialog)
        if ok:
            shot(dialog, "qgis_train_log.png")   # kept in the work folder only
            dialog.close()
            main_window_screenshot()             # kept in the work folder only
            report = (results or {}).get("REPORT")
            if not report or not os.path.exists(report):
                raise RuntimeError(f"no accuracy report: {results}")
            report_screenshot(report)
        write_report("done")
        quit_qgis(0)
    except Exception:
        fail("results")


def watchdog():
    if "finished_at" not in STATE:
        dialog = STATE.get("dialog")
        REPORT["log"] = dialog_log(dialog)
        write_report("timeout")
        quit_qgis(3)


def main():
    try:
        REPORT["qgis_version"] = Qgis.QGIS_VERSION
        window = iface.mainWindow()
        window.resize(1280, 900)
        browser = window.findChild(QDockWidget, "Browser")
        if browser is not None:
            browser.hide()
        scene = add_scene()
        areas = add_areas()
        iface.mapCanvas().setExtent(scene.extent())
        iface.mapCanvas().refreshAllLayers()
        settle(1.0)
        dialog = dialog_screenshot(scene, areas)
        STATE.update(dialog=dialog, run_started=time.time())
        dialog.algorithmFinished.connect(on_finished)
        write_report("running")
        dialog.runButton().click()            # "Run", as the user presses it
        QTimer.singleShot(int(1000 * CONFIG.get("timeout_s", 300)), watchdog)
    except Exception:
        fail("setup")


QTimer.singleShot(500, main)
