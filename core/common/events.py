"""The engine processes' protocol, stated once: the JSON-lines events core.worker and core.finetune_worker send on
stdout and ui.run_engine reads, the kinds of an error event, and their exit statuses. No TensorFlow, no GDAL: the
QGIS side imports it."""

from __future__ import annotations

#: Event names ({"event": NAME, ...} one JSON object per line).
READY, PROGRESS, LOG, RESULT, ERROR = "ready", "progress", "log", "result", "error"
#: Events that end a run.
ENDING = (RESULT, ERROR)
#: Kinds of an ERROR event: the user's input, a missing package (with "module"), a stop, a bug (with "detail").
USER, MISSING, CANCELLED, INTERNAL = "user", "missing", "cancelled", "internal"
#: Exit statuses of the engine processes.
EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_MISSING, EXIT_CANCELLED = 0, 1, 2, 3, 130
