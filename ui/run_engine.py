"""run_engine: one engine module (core.worker, core.finetune_worker) run in a child process for a Processing
algorithm, its JSON lines turned into progress, log lines and the result, its failures into one
QgsProcessingException (a missing engine into the sentence naming urbanmtl:install_engine, ui.interpreter, and in
the desktop an offer to run it, ui.install_offer)."""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Optional

from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication

from ..core.common import events
from . import engine
from .install_offer import offer_install
from .interpreter import (
    SETTINGS_KEY, EngineError, check_interpreter, child_environment, find_python, missing_message,
)

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
    purpose = "training" if module == "core.finetune_worker" else "mapping"
    try:
        interpreter = find_python(explicit_python or None, settings.value(SETTINGS_KEY, "", str),
                                  profile_dir=QgsApplication.qgisSettingsDirPath())
        env = child_environment(interpreter)
        check_interpreter(interpreter, env, purpose)
    except EngineError as exc:
        offer_install(str(exc), purpose)
        raise QgsProcessingException(str(exc)) from None
    if explicit_python:
        settings.setValue(SETTINGS_KEY, interpreter.path)
    feedback.pushInfo(tr("Engine: {python} ({source})").format(python=interpreter.path, source=interpreter.source))

    run = engine.EngineRun(interpreter, params, env, feedback.isCanceled, module=module, cleanup=cleanup)
    ended: dict[str, dict[str, Any]] = {}        # the "result" or "error" event that ended the run
    remaining = Remaining()
    try:
        run.start()
        for event in run.events():
            _show(event, feedback, ended, remaining)
    except engine.EngineCancelled as exc:
        raise QgsProcessingException(str(exc)) from None
    except EngineError as exc:
        raise QgsProcessingException(str(exc)) from None
    finally:
        # Whatever ended the loop early, no child outlives the run and no temporary file stays behind.
        if run.process is not None and run.process.poll() is None:
            run.stop()

    result, error = ended.get(events.RESULT), ended.get(events.ERROR)
    if error is not None:
        if error.get("kind") == events.MISSING:
            module_name = error.get("module")
            message = missing_message(interpreter, [module_name] if module_name else [], purpose)
            offer_install(message, purpose)
            raise QgsProcessingException(message)
        if error.get("kind") == events.INTERNAL and error.get("detail"):
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


class Remaining:
    """The time left of a run, from its progress so far (linear): the text under the progress bar."""

    #: No estimate before this share of the run (percent) or this many seconds: the start is mostly loading.
    MIN_PERCENT, MIN_SECONDS = 3.0, 5.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.shown = ""

    def text(self, percent: float) -> str:
        """"about N min left" (or seconds), "" while there is too little progress to tell."""
        elapsed = self.clock() - self.started
        if percent < self.MIN_PERCENT or elapsed < self.MIN_SECONDS or percent >= 100.0:
            return ""
        left = elapsed * (100.0 - percent) / percent
        if left < 60:
            return tr("about {seconds} s left").format(seconds=max(5, int(round(left / 5.0)) * 5))
        return tr("about {minutes} min left").format(minutes=int(round(left / 60.0)))


def _show(event: dict[str, Any], feedback: QgsProcessingFeedback, ended: dict[str, dict[str, Any]],
          remaining: Optional[Remaining] = None) -> None:
    """One JSON event of the engine to the dialog: progress bar (with the time left), log line, or the run's
    result/error."""
    kind = event.get("event")
    if kind == events.PROGRESS:
        percent = float(event.get("percent", 0.0))
        feedback.setProgress(percent)
        text = remaining.text(percent) if remaining is not None else ""
        if remaining is not None and text != remaining.shown:
            remaining.shown = text
            feedback.setProgressText(text)
    elif kind == events.LOG:
        feedback.pushInfo(user_text(str(event.get("message", ""))))
    elif kind == events.READY:
        # E.g. "Network: LiteRT 2.3.0 (XNNPACK) on CPU, 2 threads (the model has a LiteRT export ...)".
        reason = event.get("reason")
        feedback.pushInfo(tr("Network: {description}{reason}").format(
            description=event.get("description") or f"{event.get('runtime', '?')} on {event.get('device', '?')}",
            reason=f" ({reason})" if reason else ""))
    elif kind in events.ENDING:
        ended[kind] = event
    else:
        feedback.pushDebugInfo(str(event.get("message", event)))
