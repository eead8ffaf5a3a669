"""The engine process: which Python runs it, whether that Python has TensorFlow, and one run of core.worker.

TensorFlow is never imported into the QGIS process. In the desktop, QGIS has loaded the OpenGL driver
(Mesa's swrast_dri with libLLVM-15 on Debian 12) before any plugin runs, and `import tensorflow` next to that
LLVM hangs in dlopen or crashes. The algorithm therefore runs `python -m core.worker` in a child process,
with a Python found here, and reads its JSON lines (core/worker.py). This module imports no qgis.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from qgis.PyQt.QtCore import QCoreApplication

#: The plugin folder (the repository root in a checkout): `core` is importable from here.
PLUGIN_DIR = Path(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: QgsSettings key of the Python interpreter chosen by the user.
SETTINGS_KEY = "urbanmtl/python"
#: Environment variable naming the Python interpreter (after the setting).
ENV_VAR = "URBANMTL_PYTHON"
SYSTEM_PYTHON = "/usr/bin/python3"
TENSORFLOW_PIN = '"tensorflow==2.19.*" "numpy<2"'
#: What the engine process needs besides the standard library (import names).
REQUIRED_MODULES = ("numpy", "rasterio", "tensorflow")
#: How often the run loop looks at the cancel flag, and how long SIGTERM may take before SIGKILL (seconds).
POLL_SECONDS = 0.1
TERMINATE_GRACE = 1.0
PROBE_TIMEOUT = 60

#: Quick check of an interpreter: finds the modules without importing them (TensorFlow takes seconds).
PROBE_CODE = (
    "import importlib.util, json, os, sys, sysconfig\n"
    "def found(m):\n"
    "    try:\n"
    "        return importlib.util.find_spec(m) is not None\n"
    "    except (ImportError, ValueError):\n"
    "        return False\n"
    f"missing = [m for m in {REQUIRED_MODULES!r} if not found(m)]\n"
    "managed = os.path.exists(os.path.join(sysconfig.get_paths()['stdlib'], 'EXTERNALLY-MANAGED'))\n"
    "print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], 'missing': missing,\n"
    "                  'venv': sys.prefix != sys.base_prefix, 'managed': managed}))\n"
)


def tr(text: str) -> str:
    return QCoreApplication.translate("urbanmtl", text)


class EngineError(Exception):
    """A problem with the engine process; the message is for the user."""


class EngineCancelled(EngineError):
    """The user cancelled; the child was stopped and its temporary files removed."""


@dataclass
class Interpreter:
    path: str
    source: str          # where it came from, for messages: "the setting urbanmtl/python", ...


@dataclass
class ProbeResult:
    version: str = ""
    missing: list[str] = field(default_factory=list)
    venv: bool = False
    managed: bool = False


# --- which Python ---


def venv_python(plugin_dir: Path = PLUGIN_DIR) -> Optional[str]:
    """The checkout's own environment, `.venv` in the plugin folder (or beside it), if there is one."""
    for folder in (plugin_dir / ".venv", plugin_dir.parent / ".venv"):
        for name in ("bin/python", "Scripts/python.exe"):
            candidate = folder / name
            if candidate.exists():
                return str(candidate)
    return None


def find_python(explicit: Optional[str] = None, setting: Optional[str] = None,
                environ: Optional[dict[str, str]] = None, plugin_dir: Path = PLUGIN_DIR) -> Interpreter:
    """The Python interpreter to run the engine with, in order: `explicit` (the algorithm's parameter), the
    setting urbanmtl/python, $URBANMTL_PYTHON, the plugin folder's .venv, /usr/bin/python3.

    Inside QGIS sys.executable is the QGIS program itself, never a Python to start. Raises EngineError when
    the interpreter named by the user does not exist.
    """
    environ = os.environ if environ is None else environ
    chosen: list[tuple[Optional[str], str]] = [
        (explicit, tr("the parameter 'Python interpreter'")),
        (setting, tr("the setting {key}").format(key=SETTINGS_KEY)),
        (environ.get(ENV_VAR), tr("the environment variable {name}").format(name=ENV_VAR)),
    ]
    for value, source in chosen:
        if value and value.strip():
            path = os.path.expanduser(value.strip())
            if not os.path.isabs(path):
                path = shutil.which(path) or path
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                raise EngineError(tr(
                    "The Python interpreter '{path}' ({source}) does not exist or cannot be run. Give the full "
                    "path of a Python that has TensorFlow, e.g. {system}, in the advanced parameter 'Python "
                    "interpreter', or clear {source}."
                ).format(path=value, source=source, system=SYSTEM_PYTHON))
            return Interpreter(path, source)
    venv = venv_python(plugin_dir)
    if venv:
        return Interpreter(venv, tr("the plugin folder's .venv"))
    if os.path.exists(SYSTEM_PYTHON):
        return Interpreter(SYSTEM_PYTHON, tr("the system Python"))
    fallback = shutil.which("python3") or shutil.which("python")
    if fallback:
        return Interpreter(fallback, tr("the first python3 on PATH"))
    raise EngineError(tr(
        "No Python interpreter was found to run the urbanmtl engine. Install Python 3 with TensorFlow and give "
        "its path in the advanced parameter 'Python interpreter' or the environment variable {name}."
    ).format(name=ENV_VAR))


def child_environment(base: Optional[dict[str, str]] = None, plugin_dir: Path = PLUGIN_DIR) -> dict[str, str]:
    """The engine's environment: `core` importable, TensorFlow quiet, nothing of QGIS's own Python or Qt."""
    env = dict(os.environ if base is None else base)
    for name in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "QT_QPA_PLATFORM", "QT_PLUGIN_PATH"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin_dir), env.get("PYTHONPATH", "")) if p)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    return env


_PROBES: dict[tuple[str, float], ProbeResult] = {}
_PROBE_LOCK = threading.Lock()


def probe(python: str, env: Optional[dict[str, str]] = None) -> ProbeResult:
    """What `python` has of the engine's requirements (about 50 ms; complete results are cached per file
    version, incomplete ones not, so an install takes effect without restarting QGIS)."""
    try:
        key = (os.path.realpath(python), os.stat(python).st_mtime)
    except OSError:
        key = (python, 0.0)
    with _PROBE_LOCK:
        if key in _PROBES:
            return _PROBES[key]
    try:
        done = subprocess.run([python, "-c", PROBE_CODE], capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                              env=env if env is not None else child_environment(), cwd=tempfile.gettempdir(),
                              **_hidden_window())
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineError(tr("The Python interpreter '{python}' cannot be run: {error}").format(
            python=python, error=exc)) from None
    try:
        info = json.loads(done.stdout.strip().splitlines()[-1])
        result = ProbeResult(info["version"], list(info["missing"]), bool(info["venv"]), bool(info["managed"]))
    except (IndexError, KeyError, ValueError):
        raise EngineError(tr("'{python}' does not behave like a Python 3 interpreter (exit status {code}): "
                             "{output}").format(python=python, code=done.returncode,
                                                output=(done.stdout + done.stderr).strip()[-500:])) from None
    if not result.missing:
        with _PROBE_LOCK:
            _PROBES[key] = result
    return result


def install_command(interpreter: Interpreter, info: Optional[ProbeResult] = None) -> str:
    """The exact command(s) that give `interpreter` TensorFlow and rasterio on this platform."""
    python = interpreter.path
    if platform.system() == "Windows":
        return f"python -m pip install {TENSORFLOW_PIN} rasterio (in the OSGeo4W Shell)"
    if info is not None and info.venv:
        return f"{python} -m pip install {TENSORFLOW_PIN} rasterio"
    # A distribution's Python (PEP 668: Debian 12, Ubuntu 23.04 and later) refuses pip unless told; with --user
    # nothing outside the home folder changes.
    flags = "--user --break-system-packages" if info is None or info.managed else "--user"
    pip = f"{python} -m pip install {flags} {TENSORFLOW_PIN}"
    if shutil.which("apt-get") is not None and python.startswith("/usr/bin/"):
        # rasterio and h5py built against the distribution's GDAL and HDF5.
        return f"sudo apt-get install python3-rasterio python3-h5py && {pip}"
    return f"{pip} rasterio"


def missing_message(interpreter: Interpreter, missing: list[str], info: Optional[ProbeResult] = None) -> str:
    """The one message for a Python without the engine's packages: what is missing and the command to run."""
    return tr(
        "urbanmtl runs its network in a separate Python process, which needs TensorFlow 2.19 and rasterio, but "
        "{python} ({source}) cannot import {missing}. Install them with: {command} - then run the algorithm "
        "again (QGIS need not restart). Or choose a Python that has them in the advanced parameter 'Python "
        "interpreter' (remembered as the setting {key}) or the environment variable {env}."
    ).format(python=interpreter.path, source=interpreter.source,
             missing=", ".join(f"'{m}'" for m in missing) or tr("a required package"),
             command=install_command(interpreter, info), key=SETTINGS_KEY, env=ENV_VAR)


def check_interpreter(interpreter: Interpreter, env: dict[str, str]) -> ProbeResult:
    info = probe(interpreter.path, env)
    if info.missing:
        raise EngineError(missing_message(interpreter, info.missing, info))
    return info


# --- files a stopped run leaves behind ---

#: core.outputs names: '.<name>.urbanmtl-lock' beside each output while a run writes it.
LOCK_SUFFIX = ".urbanmtl-lock"


def temporary_files(final: str, since: float = 0.0) -> list[Path]:
    """Temporary files core.outputs writes beside `final` ('.<stem>.<8 hex>.tmp[.cog]<suffix>' and their
    .aux.xml), changed at or after `since` (a time.time() value)."""
    target = Path(final)
    pattern = re.compile(rf"^\.{re.escape(target.stem)}\.[0-9a-f]{{8}}\.tmp(\.cog)?{re.escape(target.suffix)}"
                         r"(\.aux\.xml)?$")
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
    try:
        import fcntl
    except ImportError:  # not POSIX: no locks to respect
        fcntl = None  # type: ignore[assignment]
    if fcntl is None or not lock.exists():
        return _unlink_all(temporary_files(final, since))
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return _unlink_all(temporary_files(final, since))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return []          # a live run holds it: its files are not ours
        return _unlink_all(temporary_files(final) + [lock])
    finally:
        os.close(fd)


def remove_temporary_files(outputs: list[Optional[str]], since: float) -> list[Path]:
    removed = []
    for final in outputs:
        removed += remove_leftovers(final, since)
    return removed


# --- one run ---


def _hidden_window() -> dict[str, Any]:
    """No console window flashing up on Windows."""
    flag = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    return {"creationflags": flag} if flag else {}


class EngineRun:
    """One `python -m core.worker` child: start(), then events() until it ends; stop() ends it at once.

    events() yields the worker's JSON objects. It checks is_cancelled() at least every POLL_SECONDS; when it
    is true the child gets SIGTERM, then SIGKILL after TERMINATE_GRACE seconds, its temporary files are
    removed and EngineCancelled is raised.
    """

    def __init__(self, interpreter: Interpreter, params: dict[str, Any], env: dict[str, str],
                 is_cancelled: Callable[[], bool] = lambda: False, plugin_dir: Path = PLUGIN_DIR) -> None:
        self.interpreter = interpreter
        self.params = params
        self.env = env
        self.is_cancelled = is_cancelled
        self.plugin_dir = plugin_dir
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
        command = [self.interpreter.path, "-m", "core.worker", self._params_file, "--watch-stdin"]
        try:
            self.process = subprocess.Popen(
                command, cwd=str(self.plugin_dir), env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", bufsize=1,
                **_hidden_window())
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
