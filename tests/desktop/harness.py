"""Run the real QGIS desktop (/usr/bin/qgis) under Xvfb with OpenGL (GLX, Mesa's llvmpipe), as a user's session.

`run_desktop(config)` starts QGIS with a throw-away HOME and profile folder, the plugin visible through
QGIS_PLUGINPATH and enabled in the profile's QGIS3.ini, and `--code qgis_session.py`, which runs the algorithm
the way its dialog does and writes a JSON report (see qgis_session.py). QGIS is killed, with Xvfb and any
engine process, if it has not ended within the time limit. Used by test_qgis_desktop.py and
tools/screenshots.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
QGIS = Path("/usr/bin/qgis")
XVFB_RUN = shutil.which("xvfb-run")
#: GLX on, so QGIS loads the OpenGL driver (swrast_dri + libLLVM-15 on Debian 12) as on a real desktop.
XVFB_SERVER_ARGS = "-screen 0 1280x1024x24 +extension GLX"
SESSION_SCRIPT = Path(__file__).resolve().parent / "qgis_session.py"
PLUGIN_NAME = "urbanmtl"

SCENE_DIR = REPO.parent / "shared" / "data" / "scene"
SCENE_STACK = SCENE_DIR / "T33UUU_20170216_L1C_13band.tif"
SCENE_BANDS_DIR = SCENE_DIR / "IMG_DATA"
#: Level-1C band order of the 13-band stack (shared/data/README.md).
L1C_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


def scene_available() -> bool:
    return SCENE_STACK.exists() or SCENE_BANDS_DIR.is_dir()


def desktop_available() -> Optional[str]:
    """None when QGIS can be started under Xvfb here, else why not."""
    if not QGIS.exists():
        return "the QGIS desktop (/usr/bin/qgis) is not installed"
    if XVFB_RUN is None or shutil.which("xauth") is None:
        return "xvfb-run and xauth are not installed (apt-get install xvfb xauth)"
    return None


def crop_scene(path: Path, row: int, col: int, height: int = 256, width: int = 256) -> Path:
    """A height x width window of the real T33UUU Sentinel-2 L1C scene as a 13-band GeoTIFF with band names.

    From the 13-band stack when shared/data has it, else from the original JP2 band files (20 m and 60 m bands
    resampled bilinearly to 10 m, as the stack was made).
    """
    from osgeo import gdal

    gdal.UseExceptions()
    path.parent.mkdir(parents=True, exist_ok=True)
    if SCENE_STACK.exists():
        source = str(SCENE_STACK)
    else:
        files = []
        for name in L1C_BANDS:
            suffix = "8A" if name == "B8A" else name[1:].zfill(2)
            files.append(str(next(SCENE_BANDS_DIR.glob(f"*_B{suffix}.jp2"))))
        vrt = path.with_suffix(".vrt")
        gdal.BuildVRT(str(vrt), files, separate=True, resolution="highest", resampleAlg="bilinear")
        source = str(vrt)
    gdal.Translate(str(path), source, srcWin=[col, row, width, height], format="GTiff",
                   creationOptions=["TILED=YES", "COMPRESS=DEFLATE"])
    dataset = gdal.Open(str(path), gdal.GA_Update)
    for index, name in enumerate(L1C_BANDS, start=1):
        dataset.GetRasterBand(index).SetDescription(name)
    dataset = None
    if not SCENE_STACK.exists():
        os.remove(path.with_suffix(".vrt"))
    return path


@dataclass
class DesktopRun:
    returncode: Optional[int]      # None: killed after the time limit
    seconds: float
    report: Optional[dict[str, Any]]
    output: str                    # QGIS's stdout and stderr

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def plugin_folder(root: Path, plugin: Path = REPO) -> Path:
    """A folder for QGIS_PLUGINPATH holding `urbanmtl -> plugin`."""
    root.mkdir(parents=True, exist_ok=True)
    link = root / PLUGIN_NAME
    if not link.exists():
        link.symlink_to(plugin, target_is_directory=True)
    return root


def desktop_environment(home: Path, plugins: Path, config: Path,
                        extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """A user's desktop environment: a display from xvfb-run, nothing of pytest's QGIS or Python set-up."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QGIS_", "PYTHON", "URBANMTL_")) and k not in (
               "QT_QPA_PLATFORM", "VIRTUAL_ENV", "DISPLAY", "XAUTHORITY", "TF_CPP_MIN_LOG_LEVEL")}
    runtime = home / "runtime"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), QGIS_PLUGINPATH=str(plugins),
               URBANMTL_DESKTOP_CONFIG=str(config), LANG="C.UTF-8", LC_ALL="C.UTF-8")
    env.update(extra or {})
    return env


def write_profile(profiles: Path) -> None:
    """A default profile with the plugin enabled, no first-start dialogs or news feed."""
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text(
        "[PythonPlugins]\n"
        f"{PLUGIN_NAME}=true\n"
        "\n[core]\n"
        "NewsFeed\\httpsfeedqgisorg\\disabled=true\n"
        "\n[qgis]\n"
        "checkVersion=false\n"
        "allowVersionCheck=false\n",
        encoding="utf-8",
    )


def run_desktop(config: dict[str, Any], workdir: Path, timeout: float = 240.0, plugin: Path = REPO,
                extra_env: Optional[dict[str, str]] = None) -> DesktopRun:
    """Start QGIS under Xvfb with qgis_session.py and `config`; wait at most `timeout` seconds.

    config needs "report" (the JSON file the session writes); see qgis_session.py for the rest.
    """
    home, profiles = workdir / "home", workdir / "profiles"
    for folder in (home, profiles):
        folder.mkdir(parents=True, exist_ok=True)
    write_profile(profiles)
    plugins = plugin_folder(workdir / "plugins", plugin)
    config_file = workdir / "session.json"
    config_file.write_text(json.dumps(config), encoding="utf-8")
    env = desktop_environment(home, plugins, config_file, extra_env)
    command = [XVFB_RUN or "xvfb-run", "-a", "-s", XVFB_SERVER_ARGS, str(QGIS), "--profiles-path", str(profiles),
               "--nologo", "--noversioncheck", "--code", str(SESSION_SCRIPT)]
    log = workdir / "qgis_output.txt"
    start = time.monotonic()
    with open(log, "w", encoding="utf-8", errors="replace") as out:
        # Own process group: on time-out, Xvfb, QGIS and any engine child go together.
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(workdir),
                                   start_new_session=True)
        try:
            returncode: Optional[int] = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            returncode = None
    seconds = time.monotonic() - start
    report_path = Path(config["report"])
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else None
    return DesktopRun(returncode, seconds, report, log.read_text(encoding="utf-8", errors="replace"))
