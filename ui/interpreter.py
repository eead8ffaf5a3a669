"""Which Python runs the urbanmtl engine, and whether it has what the engine needs (LiteRT or TensorFlow, rasterio;
TensorFlow and scikit-learn to train): the search order (a configured interpreter, a checkout's .venv, else QGIS's own
Python with the engine folder urbanmtl:install_engine fills), a quick probe that imports nothing, and the one
sentence naming Install engine when something is missing. This module imports no qgis.core (only Qt's translation),
and never TensorFlow.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from qgis.PyQt.QtCore import QCoreApplication

from .engine_python import engine_folder, qgis_python

#: The plugin folder (the repository root in a checkout): `core` is importable from here.
PLUGIN_DIR = Path(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: QgsSettings key of the Python interpreter chosen by the user.
SETTINGS_KEY = "urbanmtl/python"
#: Environment variable naming the Python interpreter (after the setting).
ENV_VAR = "URBANMTL_PYTHON"
SYSTEM_PYTHON = "/usr/bin/python3"
#: The algorithm that installs the engine, and where it is in the menus.
INSTALL_ALGORITHM = "urbanmtl:install_engine"
#: What the engine processes import, by purpose; a tuple of names is a choice (any one will do).
NEEDS: dict[str, tuple] = {"mapping": ("numpy", "rasterio", ("ai_edge_litert", "tensorflow")),
                           "training": ("numpy", "rasterio", "tensorflow", "keras", "sklearn")}
#: Every module the probe looks for.
PROBED = ("numpy", "rasterio", "ai_edge_litert", "tensorflow", "keras", "sklearn")
PROBE_TIMEOUT = 60

#: Quick check of an interpreter: finds the modules without importing them (TensorFlow takes seconds).
PROBE_CODE = (
    "import importlib.util, json, os, sys, sysconfig\n"
    "def found(m):\n"
    "    try:\n"
    "        return importlib.util.find_spec(m) is not None\n"
    "    except (ImportError, ValueError):\n"
    "        return False\n"
    f"absent = [m for m in {PROBED!r} if not found(m)]\n"
    "managed = os.path.exists(os.path.join(sysconfig.get_paths()['stdlib'], 'EXTERNALLY-MANAGED'))\n"
    "print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], 'absent': absent,\n"
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
    env: dict[str, str] = field(default_factory=dict)   # variables its process needs (PYTHONHOME on Windows)
    engine_dir: Optional[str] = None   # QGIS's own Python: the folder urbanmtl:install_engine fills


@dataclass
class ProbeResult:
    version: str = ""
    absent: list[str] = field(default_factory=list)
    venv: bool = False
    managed: bool = False

    def missing(self, purpose: str = "mapping") -> list[str]:
        """The modules `purpose` (NEEDS) lacks here; of a choice, its first."""
        lacking = []
        for need in NEEDS[purpose]:
            names = need if isinstance(need, tuple) else (need,)
            if all(name in self.absent for name in names):
                lacking.append(names[0])
        return lacking


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
                environ: Optional[dict[str, str]] = None, plugin_dir: Path = PLUGIN_DIR,
                profile_dir: Optional[str] = None, qgis: Optional[Callable[[], Any]] = None) -> Interpreter:
    """The Python interpreter to run the engine with, in order: `explicit` (the algorithm's parameter), the
    setting urbanmtl/python, $URBANMTL_PYTHON, the plugin folder's .venv (a checkout), then QGIS's own Python
    (ui.engine_python.qgis_python) with the engine folder of the QGIS profile `profile_dir` that
    urbanmtl:install_engine fills.

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
                    "path of a Python in the advanced parameter 'Python interpreter', or clear {source} to use "
                    "QGIS's own Python with the engine that {install} installs."
                ).format(path=value, source=source, install=INSTALL_ALGORITHM))
            return Interpreter(path, source)
    venv = venv_python(plugin_dir)
    if venv:
        return Interpreter(venv, tr("the plugin folder's .venv"))
    own = (qgis or qgis_python)()
    if own is None:
        raise EngineError(tr(
            "QGIS's own Python was not found beside {program}, so the urbanmtl engine cannot start. Give a Python 3 "
            "in the advanced parameter 'Python interpreter' or the environment variable {name}."
        ).format(program=sys.executable, name=ENV_VAR))
    folder = engine_folder(profile_dir, platform.python_version()) if profile_dir else None
    return Interpreter(own.path, tr("QGIS's own Python"), dict(own.env), str(folder) if folder else None)


def child_environment(interpreter: Optional[Interpreter] = None, base: Optional[dict[str, str]] = None,
                      plugin_dir: Path = PLUGIN_DIR) -> dict[str, str]:
    """The engine's environment: `core` importable, TensorFlow quiet, nothing of QGIS's own Qt. A configured
    interpreter starts without QGIS's PYTHONHOME (it is another Python); QGIS's own Python gets what it needs
    (PYTHONHOME on Windows), the engine folder on its path and no user site (pip --user's packages, e.g. an h5py
    that crashes beside Debian's HDF5, would come first)."""
    env = dict(os.environ if base is None else base)
    for name in ("PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "QT_QPA_PLATFORM", "QT_PLUGIN_PATH"):
        env.pop(name, None)
    paths = [str(plugin_dir)]
    if interpreter is not None and interpreter.engine_dir:
        paths.append(interpreter.engine_dir)
        env["PYTHONNOUSERSITE"] = "1"
    if interpreter is not None:
        env.update(interpreter.env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*paths, env.get("PYTHONPATH", "")) if p)
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
        result = ProbeResult(info["version"], list(info["absent"]), bool(info["venv"]), bool(info["managed"]))
    except (IndexError, KeyError, ValueError):
        raise EngineError(tr("'{python}' does not behave like a Python 3 interpreter (exit status {code}): "
                             "{output}").format(python=python, code=done.returncode,
                                                output=(done.stdout + done.stderr).strip()[-500:])) from None
    if not result.absent:
        with _PROBE_LOCK:
            _PROBES[key] = result
    return result


def missing_message(interpreter: Interpreter, missing: list[str], purpose: str = "mapping") -> str:
    """The one sentence for a Python without the engine's packages: what is missing and how to install it."""
    what = (tr("TensorFlow, Keras and scikit-learn for training (tick 'Also install what training needs')")
            if purpose == "training" else tr("LiteRT and rasterio for mapping"))
    if interpreter.engine_dir is not None:
        return tr(
            "The urbanmtl engine is not installed for QGIS's Python ({python} cannot import {missing}): run "
            "Install engine ({install}, in the Processing Toolbox under urbanmtl and in the menu Raster > urbanmtl), "
            "which installs {what} into {folder}, then run this again."
        ).format(python=interpreter.path, missing=", ".join(f"'{m}'" for m in missing), install=INSTALL_ALGORITHM,
                 what=what, folder=interpreter.engine_dir)
    return tr(
        "The urbanmtl engine cannot run in {python} ({source}): it cannot import {missing}. Install them there "
        "(python -m pip install -r the plugin's requirements.txt), or clear {source} to use QGIS's own Python and "
        "run Install engine ({install}, in the Processing Toolbox under urbanmtl and in the menu Raster > urbanmtl)."
    ).format(python=interpreter.path, source=interpreter.source, missing=", ".join(f"'{m}'" for m in missing),
             install=INSTALL_ALGORITHM)


def check_interpreter(interpreter: Interpreter, env: dict[str, str], purpose: str = "mapping") -> ProbeResult:
    """The probe of `interpreter`; EngineError with missing_message when it lacks what `purpose` needs."""
    info = probe(interpreter.path, env)
    missing = info.missing(purpose)
    if missing:
        raise EngineError(missing_message(interpreter, missing, purpose))
    return info


def hidden_window() -> dict[str, Any]:
    """No console window flashing up on Windows."""
    flag = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    return {"creationflags": flag} if flag else {}
