"""run_engine: one engine module (core.worker, core.finetune_worker) run in a child process for a Processing
algorithm, its JSON lines turned into progress, log lines and the result, its failures into one
QgsProcessingException (a missing TensorFlow into the exact install command, ui.interpreter)."""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

from qgis.core import QgsProcessingException, QgsProcessingFeedback, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication

from . import engine

_KM2 = re.compile(r"\bkm2\b")


def tr(text: str) -> str:
    return QCoreApplication.translate("MapHseLczAlgorithm", text)


def user_text(message: str) -> str:
    """An engine message as the log shows it (square kilometres written km²)."""
    return _KM2.sub("km²", message)


def run_engine(params: dict[str, Any], explicit_python: str, feedback: QgsProcessingFeedback,
               module: str = "core.worker", cleanup: Optional[Callable[[], Any]] = None) -> dict[str, Any]:
    """Run an engine module (core.worker, core.finetune_worker) in a child process with the Python found by
    ui.engine; its progress and messages go to `feedback`, its errors become one QgsProcessingException.
    Returns its result event. `cleanup` is called after a stopped child (see ui.engine.EngineRun)."""
    settings = QgsSettings()
    try:
        interpreter = engine.find_python(explicit_python or None, settings.value(engine.SETTINGS_KEY, "", str))
        env = engine.child_environment()
        info = engine.check_interpreter(interpreter, env)
    except engine.EngineError as exc:
        raise QgsProcessingException(str(exc)) from None
    if explicit_python:
        settings.setValue(engine.SETTINGS_KEY, interpreter.path)
    feedback.pushInfo(tr("Engine: {python} ({source})").format(python=interpreter.path, source=interpreter.source))

    run = engine.EngineRun(interpreter, params, env, feedback.isCanceled, module=module, cleanup=cleanup)
    ended: dict[str, dict[str, Any]] = {}        # the "result" or "error" event that ended the run
    try:
        run.start()
        for event in run.events():
            _show(event, feedback, ended)
    except engine.EngineCancelled as exc:
        raise QgsProcessingException(str(exc)) from None
    except engine.EngineError as exc:
        raise QgsProcessingException(str(exc)) from None
    finally:
        # Whatever ended the loop early, no child outlives the run and no temporary file stays behind.
        if run.process is not None and run.process.poll() is None:
            run.stop()

    result, error = ended.get("result"), ended.get("error")
    if error is not None:
        if error.get("kind") == "missing":
            module_name = error.get("module")
            raise QgsProcessingException(engine.missing_message(
                interpreter, [module_name] if module_name else [], info))
        if error.get("kind") == "internal" and error.get("detail"):
            feedback.pushDebugInfo(str(error["detail"]))
        run.stop()
        raise QgsProcessingException(user_text(str(error.get("message", ""))))
    if result is None:
        run.stop()
        tail = "\n".join(run.stderr_tail)
        if tail:
            feedback.pushDebugInfo(tail)
        raise QgsProcessingException(tr(
            "The urbanmtl engine ({python}) stopped without a result (exit status {code}). Its last output:\n"
            "{tail}").format(python=interpreter.path, code=run.returncode, tail=tail[-2000:] or "-"))
    return result


def _show(event: dict[str, Any], feedback: QgsProcessingFeedback, ended: dict[str, dict[str, Any]]) -> None:
    """One JSON event of the engine to the dialog: progress bar, log line, or the run's result/error."""
    kind = event.get("event")
    if kind == "progress":
        feedback.setProgress(float(event.get("percent", 0.0)))
    elif kind == "log":
        feedback.pushInfo(user_text(str(event.get("message", ""))))
    elif kind == "ready":
        feedback.pushInfo(tr("TensorFlow {version} on {device}").format(
            version=event.get("tensorflow", "?"), device=event.get("device", "?")))
    elif kind in ("result", "error"):
        ended[kind] = event
    else:
        feedback.pushDebugInfo(str(event.get("message", event)))
