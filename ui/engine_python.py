"""QGIS's own Python and the engine folder, per platform: the interpreter the engine process starts with when none is
configured (OSGeo4W and the standalone installer on Windows, the QGIS.app bundle on macOS, the distribution's Python
on Linux), what its environment needs, and the folder of the QGIS profile that urbanmtl:install_engine fills and
only the engine process puts on its path. Each platform's logic is a small function of the paths it is given, so it
is tested on fake layouts; this module imports neither qgis.core nor the engine."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

#: The engine folder's name inside the QGIS profile folder: urbanmtl/engine-py3.11 (one per Python version, as wheels
#: are built per version).
ENGINE_FOLDER = "urbanmtl"


@dataclass(frozen=True)
class QgisPython:
    """QGIS's own Python: the interpreter and the variables its child process must have (PYTHONHOME on Windows)."""

    path: str
    env: dict[str, str] = field(default_factory=dict)


def _first(candidates: list[Path], exists: Callable[[str], bool]) -> Optional[str]:
    for candidate in candidates:
        if exists(str(candidate)):
            return str(candidate)
    return None


def windows_python(executable: str, prefix: str, exists: Callable[[str], bool] = os.path.isfile,
                   listdir: Callable[[str], list[str]] = os.listdir) -> Optional[QgisPython]:
    """OSGeo4W or the standalone installer: QGIS runs as <root>/bin/qgis-bin.exe (or qgis-ltr-bin.exe) and its Python
    lives in <root>/apps/Python3xx, which sys.prefix names. python.exe there needs PYTHONHOME set to that folder (the
    way OSGeo4W's own shell starts it; a child started with PYTHONHOME removed fails to find its standard library)."""
    root = Path(executable).parent.parent
    homes = [Path(prefix)] if prefix else []
    try:
        homes += sorted((root / "apps" / name for name in listdir(str(root / "apps"))
                         if name.lower().startswith("python3")), reverse=True)
    except OSError:
        pass
    for home in homes:
        found = _first([home / "python.exe", home / "python3.exe"], exists)
        if found:
            return QgisPython(found, {"PYTHONHOME": str(home)})
    found = _first([root / "bin" / "python.exe", root / "bin" / "python3.exe"], exists)
    return QgisPython(found, {"PYTHONHOME": prefix} if prefix else {}) if found else None


def macos_python(executable: str, prefix: str, exists: Callable[[str], bool] = os.path.isfile) -> Optional[QgisPython]:
    """The QGIS.app bundle: QGIS runs as QGIS.app/Contents/MacOS/QGIS; its Python is Contents/MacOS/bin/python3 (the
    official bundles), else the framework sys.prefix names."""
    contents = Path(executable).parent.parent
    candidates = [contents / "MacOS" / "bin" / "python3", contents / "MacOS" / "bin" / "python"]
    if prefix:
        candidates += [Path(prefix) / "bin" / "python3"]
    found = _first(candidates, exists)
    return QgisPython(found) if found else None


def linux_python(executable: str, prefix: str, exists: Callable[[str], bool] = os.path.isfile) -> Optional[QgisPython]:
    """The Python QGIS embeds: <sys.prefix>/bin/python3 (the distribution's /usr/bin/python3, or conda's or Flatpak's
    own), else /usr/bin/python3."""
    candidates = ([Path(prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}",
                   Path(prefix) / "bin" / "python3"] if prefix else []) + [Path("/usr/bin/python3")]
    found = _first(candidates, exists)
    return QgisPython(found) if found else None


def qgis_python(system: Optional[str] = None, executable: Optional[str] = None,
                prefix: Optional[str] = None) -> Optional[QgisPython]:
    """QGIS's own Python on this platform (`system` as platform.system() says it), or None when none is found.
    Inside QGIS sys.executable is the QGIS program, never a Python; sys.prefix is its Python's home."""
    import platform

    system = system or platform.system()
    executable = sys.executable if executable is None else executable
    prefix = sys.prefix if prefix is None else prefix
    if system == "Windows":
        return windows_python(executable, prefix)
    if system == "Darwin":
        return macos_python(executable, prefix)
    return linux_python(executable, prefix)


def python_tag(version: str) -> str:
    """'py3.11' for a Python version '3.11.2'."""
    return "py" + ".".join(version.split(".")[:2])


def engine_folder(profile_dir: str, version: str) -> Path:
    """Where urbanmtl:install_engine puts the engine's packages: <QGIS profile>/urbanmtl/engine-py3.11."""
    return Path(profile_dir) / ENGINE_FOLDER / f"engine-{python_tag(version)}"
