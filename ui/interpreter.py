"""Which Python runs the urbanmtl engine, and whether it has what the engine needs (TensorFlow, rasterio): the
search order, a quick probe that imports nothing, and the one message with the exact install command when
something is missing. This module imports no qgis.core (only Qt's translation), and never TensorFlow.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from qgis.PyQt.QtCore import QCoreApplication

#: The plugin folder (the repository root in a checkout): `core` is importable from here.
PLUGIN_DIR = Path(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: QgsSettings key of the Python interpreter chosen by the user.
SETTINGS_KEY = "urbanmtl/python"
#: Environment variable naming the Python interpreter (after the setting).
ENV_VAR = "URBANMTL_PYTHON"
SYSTEM_PYTHON = "/usr/bin/python3"
TENSORFLOW_PIN = '"tensorflow==2.19.*" "numpy<2"'
#: What the install commands add to TensorFlow: the random forest that training from polygons compares with.
EXTRA_PACKAGES = "scikit-learn"
#: What the engine process needs besides the standard library (import names).
REQUIRED_MODULES = ("numpy", "rasterio", "tensorflow")
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
                              **hidden_window())
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
        return f"python -m pip install {TENSORFLOW_PIN} {EXTRA_PACKAGES} rasterio (in the OSGeo4W Shell)"
    if info is not None and info.venv:
        return f"{python} -m pip install {TENSORFLOW_PIN} {EXTRA_PACKAGES} rasterio"
    # A distribution's Python (PEP 668: Debian 12, Ubuntu 23.04 and later) refuses pip unless told; with --user
    # nothing outside the home folder changes.
    flags = "--user --break-system-packages" if info is None or info.managed else "--user"
    pip = f"{python} -m pip install {flags} {TENSORFLOW_PIN} {EXTRA_PACKAGES}"
    if shutil.which("apt-get") is not None and python.startswith("/usr/bin/"):
        # rasterio and h5py built against the distribution's GDAL and HDF5.
        return f"sudo apt-get install python3-rasterio python3-h5py && {pip}"
    return f"{pip} rasterio"


def missing_message(interpreter: Interpreter, missing: list[str], info: Optional[ProbeResult] = None) -> str:
    """The one message for a Python without the engine's packages: what is missing and the command to run."""
    return tr(
        "urbanmtl runs its network in a separate Python process, which needs TensorFlow 2.19 and rasterio (and "
        "scikit-learn to train from polygons), but "
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


def hidden_window() -> dict[str, Any]:
    """No console window flashing up on Windows."""
    flag = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    return {"creationflags": flag} if flag else {}
