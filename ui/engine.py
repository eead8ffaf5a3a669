"""One run of the engine process, core.worker (or core.finetune_worker, which speaks the same JSON lines), and the
temporary files a stopped run leaves behind. Which Python runs it and whether that Python has the engine's packages:
ui.interpreter (its names are reachable here too).

TensorFlow is never imported into the QGIS process. In the desktop, QGIS has loaded the OpenGL driver
(Mesa's swrast_dri with libLLVM-15 on Debian 12) before any plugin runs, and `import tensorflow` next to that
LLVM hangs in dlopen or crashes. The algorithm therefore runs `python -m core.worker` in a child process,
with a Python found by ui.interpreter, and reads its JSON lines (core/worker.py). This module imports no
qgis.core.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..core.common.locks import locking_available, try_lock
from ..core.common.spec import LOCK_SUFFIX, temporary_pattern
from .interpreter import PLUGIN_DIR, EngineError, Interpreter, hidden_window, tr

#: How often the run loop looks at the cancel flag, and how long SIGTERM may take before SIGKILL (seconds).
POLL_SECONDS = 0.1
TERMINATE_GRACE = 1.0


class EngineCancelled(EngineError):
    """The user cancelled; the child was stopped and its temporary files removed."""


# --- files a stopped run leaves behind ---

#: core.outputs names: '.<name>.urbanmtl-lock' beside each output while a run writes it (LOCK_SUFFIX), and its
#: temporaries (temporary_pattern): both from core.common.spec.


def temporary_files(final: str, since: float = 0.0) -> list[Path]:
    """Temporary files core.outputs writes beside `final` ('.<stem>.<8 hex>.tmp[.cog]<suffix>' and their
    .aux.xml), changed at or after `since` (a time.time() value)."""
    target = Path(final)
    pattern = temporary_pattern(target)
    found = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        try:
            if pattern.match(entry.name) and entry.stat().st_mtime >= since - 2:
                found.append(entry)
        except OSError:
            pass
    return found


def _unlink_all(paths: list[Path]) -> list[Path]:
    removed = []
    for path in paths:
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def remove_leftovers(final: Optional[str], since: float) -> list[Path]:
    """Remove what a killed engine left beside output `final`: its temporary files and its lock file.

    With a lock file, only when nobody holds its lock any more (the kernel released the killed child's), so
    another live run's files are never touched; without one, the temporary files changed since `since`.
    """
    if not final:
        return []
    target = Path(final)
    lock = target.with_name(f".{target.name}{LOCK_SUFFIX}")
    if not locking_available() or not lock.exists():
        return _unlink_all(temporary_files(final, since))
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return _unlink_all(temporary_files(final, since))
    try:
        try:
            if not try_lock(fd):
                return []      # a live run holds it: its files are not ours
        except OSError:
            return []
        return _unlink_all(temporary_files(final) + [lock])
    finally:
        os.close(fd)


def remove_temporary_files(outputs: list[Optional[str]], since: float) -> list[Path]:
    removed = []
    for final in outputs:
        removed += remove_leftovers(final, since)
    return removed


# --- one run ---


class EngineRun:
    """One `python -m core.worker` child (or another engine module with its protocol, e.g. core.finetune_worker):
    start(), then events() until it ends; stop() ends it at once.

    events() yields the worker's JSON objects. It checks is_cancelled() at least every POLL_SECONDS; when it
    is true the child gets SIGTERM, then SIGKILL after TERMINATE_GRACE seconds, its temporary files are
    removed (and `cleanup()` is called, for what a module other than core.worker leaves) and EngineCancelled
    is raised.
    """

    def __init__(self, interpreter: Interpreter, params: dict[str, Any], env: dict[str, str],
                 is_cancelled: Callable[[], bool] = lambda: False, plugin_dir: Path = PLUGIN_DIR,
                 module: str = "core.worker", cleanup: Optional[Callable[[], Any]] = None) -> None:
        self.interpreter = interpreter
        self.params = params
        self.env = env
        self.is_cancelled = is_cancelled
        self.plugin_dir = plugin_dir
        self.module = module
        self.cleanup = cleanup
        self.process: Optional[subprocess.Popen] = None
        self.stderr_tail: deque = deque(maxlen=60)
        self.started = 0.0
        self._lines: queue.Queue = queue.Queue()
        self._params_file: Optional[str] = None
        self._readers: list[threading.Thread] = []

    @property
    def outputs(self) -> list[Optional[str]]:
        return [self.params.get(k) for k in ("hse", "lcz", "confidence", "stats")]

    def start(self) -> None:
        handle, self._params_file = tempfile.mkstemp(prefix="urbanmtl-", suffix=".json")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(self.params, out)
        self.started = time.time()
        command = [self.interpreter.path, "-m", self.module, self._params_file, "--watch-stdin"]
        try:
            self.process = subprocess.Popen(
                command, cwd=str(self.plugin_dir), env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1,
                **hidden_window())
        except OSError as exc:
            self._cleanup_params()
            raise EngineError(tr("Cannot start the urbanmtl engine with '{python}': {error}").format(
                python=self.interpreter.path, error=exc)) from None
        self._readers = [threading.Thread(target=self._read_stdout, name="urbanmtl-engine-out", daemon=True),
                         threading.Thread(target=self._read_stderr, name="urbanmtl-engine-err", daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self._lines.put(line)
        except (OSError, ValueError):  # closed under us: the run is over
            pass
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        try:
            for line in self.process.stderr:
                self.stderr_tail.append(line.rstrip("\n"))
        except (OSError, ValueError):
            pass

    def events(self) -> Iterator[dict[str, Any]]:
        try:
            while True:
                if self.is_cancelled():
                    self.stop()
                    raise EngineCancelled(tr("Cancelled by the user; no output was written."))
                try:
                    line = self._lines.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                if line is None:
                    break
                line = line.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"event": "debug", "message": line}
                if not isinstance(event, dict):
                    event = {"event": "debug", "message": line}
                yield event
            assert self.process is not None
            self.process.wait()
        finally:
            self._cleanup_params()
            self._close_pipes()

    def _close_pipes(self) -> None:
        """Close the child's pipes once it has ended and the readers have drained them."""
        process = self.process
        if process is None or process.poll() is None:
            return
        for reader in self._readers:
            reader.join(timeout=1.0)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass

    @property
    def returncode(self) -> Optional[int]:
        return None if self.process is None else self.process.returncode

    def stop(self) -> None:
        """End the child now (SIGTERM, SIGKILL after TERMINATE_GRACE s) and remove its temporary files."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(TERMINATE_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        remove_temporary_files(self.outputs, self.started)
        if self.cleanup is not None:
            self.cleanup()
        self._cleanup_params()
        self._close_pipes()

    def _cleanup_params(self) -> None:
        if self._params_file:
            try:
                os.remove(self._params_file)
            except OSError:
                pass
            self._params_file = None
        process = self.process
        if process is not None and process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()
            except OSError:
                pass
