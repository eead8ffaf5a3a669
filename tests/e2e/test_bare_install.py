"""The plugin as a QGIS user gets it: `make zip` within the plugin repository's upload rules, unpacked into a fresh
QGIS profile and run by QGIS's own Python (/usr/bin/python3 here) with no venv, no URBANMTL_PYTHON and no PYTHONPATH,
through the real qgis_process.bin: mapping refuses in one sentence naming urbanmtl:install_engine, Install engine
installs the engine from the package index into the profile, and the demo city then maps as the checkout's engine
maps it, with no TensorFlow anywhere in the profile."""

from __future__ import annotations

import configparser
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.mapping.agreement import map_agreement

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
DEMO = REPO / "data" / "demo" / "montpellier_20171030_S2L1C_10band.tif"
#: The plugin repository's upload rules (qgis/QGIS-Plugins-Website, qgis-app/plugins/validator.py).
MAX_UPLOAD_BYTES = 25_000_000
REQUIRED = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about", "tracker",
            "repository")
FORBIDDEN_URLS = {"tracker": "http://bugs", "repository": "http://repo", "homepage": "http://homepage"}
needs_qgis = pytest.mark.skipif(not QGIS_PROCESS.exists() or shutil.which("make") is None,
                                reason="qgis_process.bin (QGIS 3.22) or make is missing")


def upload_problems(archive: Path) -> list[str]:
    """What the plugin repository's validator would refuse in `archive` (empty: nothing)."""
    problems = []
    if archive.stat().st_size > MAX_UPLOAD_BYTES:
        problems.append(f"{archive.stat().st_size} bytes, over {MAX_UPLOAD_BYTES}")
    zf = zipfile.ZipFile(archive)
    names = zf.namelist()
    for name in names:
        if ".." in name or name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
            problems.append(f"path information in {name}")
        if ".pyc" in name:
            problems.append(f".pyc file {name}")
        if {"__MACOSX", ".git", "__pycache__"} & set(name.split("/")):
            problems.append(f"forbidden folder in {name}")
    if zf.testzip():
        problems.append("a bad zip member")
    top = {name.split("/")[0] for name in names}
    if len(top) != 1:
        return problems + [f"several top folders {sorted(top)}"]
    package = top.pop()
    if not re.match(r"^[A-Za-z][A-Za-z0-9-_]+$", package) or not package.isidentifier():
        problems.append(f"top folder {package} is not a Python identifier")
    for needed in ("__init__.py", "metadata.txt", "LICENSE"):
        if f"{package}/{needed}" not in names:
            problems.append(f"no {needed}")
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read_file(io.StringIO(zf.read(f"{package}/metadata.txt").decode("utf-8")))
    general = dict(parser.items("general"))
    problems += [f"metadata lacks {field}" for field in REQUIRED if not general.get(field, "").strip()]
    problems += [f"{field} is the placeholder {url}" for field, url in FORBIDDEN_URLS.items()
                 if general.get(field) == url]
    problems += [f"{field} {general[field]} is not https" for field in ("tracker", "repository", "homepage")
                 if field in general and not general[field].startswith("https://")]
    if f"{package}/{general.get('icon', '').lstrip('./')}" not in names:
        problems.append(f"icon {general.get('icon')} not in the zip")
    return problems


def build_zip(tmp_path: Path) -> Path:
    archive = tmp_path / "urbanmtl.zip"
    done = subprocess.run(["make", "-s", "-C", str(REPO), "-f", "mk/plugin.mk", "zip",
                           f"PLUGIN_STAGE={tmp_path / 'stage' / 'urbanmtl'}", f"PLUGIN_ZIP={archive}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return archive


@needs_qgis
def test_the_zip_passes_the_plugin_repositorys_upload_rules(tmp_path):
    archive = build_zip(tmp_path)
    assert upload_problems(archive) == []
    names = zipfile.ZipFile(archive).namelist()
    for shipped in ("urbanmtl/LICENSE", "urbanmtl/models/model.tflite", "urbanmtl/models/model_1x512x512.tflite",
                    "urbanmtl/ui/install_algorithm.py"):
        assert shipped in names
    assert not [n for n in names if n.startswith("urbanmtl/data/")], "the demo city is not part of the plugin"


def test_the_rules_check_refuses_what_the_validator_refuses(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("urbanmtl/__init__.py", "")
        zf.writestr("urbanmtl/__pycache__/x.cpython-311.pyc", "")
        zf.writestr("urbanmtl/metadata.txt", "[general]\nname=urbanmtl\ntracker=http://bugs\nicon=icon.png\n")
    problems = " | ".join(upload_problems(bad))
    for expected in (".pyc file", "forbidden folder", "no LICENSE", "metadata lacks email", "placeholder http://bugs",
                     "icon icon.png not in the zip"):
        assert expected in problems


def profile_environment(home: Path) -> dict[str, str]:
    """A user's QGIS: a fresh HOME (so a fresh profile), QGIS's own Python, nothing of this test's environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QGIS_", "URBANMTL_", "PYTHON", "VIRTUAL_ENV", "PIP_"))}
    (home / "runtime").mkdir(parents=True, mode=0o700, exist_ok=True)
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(home / "runtime"),
               # pip's own cache, kept between runs so CI downloads the wheels once (.cache/ is not in git)
               PIP_CACHE_DIR=str(REPO / ".cache" / "pip"))
    return env


def qgis_process(env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(QGIS_PROCESS), *args], capture_output=True, text=True, env=env, timeout=timeout)


@needs_qgis
def test_a_bare_profile_refuses_installs_the_engine_and_maps_like_the_checkout(tmp_path):
    archive = build_zip(tmp_path)
    home = tmp_path / "home"
    profile = home / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"
    (profile / "python" / "plugins").mkdir(parents=True)
    zipfile.ZipFile(archive).extractall(profile / "python" / "plugins")
    env = profile_environment(home)
    enabled = qgis_process(env, "plugins", "enable", "urbanmtl")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    out = tmp_path / "out"
    out.mkdir()
    run = ["run", "urbanmtl:map_hse_lcz", "--", f"INPUT={DEMO}", f"OUTPUT_HSE={out / 'hse.tif'}",
           f"OUTPUT_LCZ={out / 'lcz.tif'}"]

    refused = qgis_process(env, *run)
    log = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Traceback" not in log, log
    sentences = [line for line in log.splitlines() if "urbanmtl:install_engine" in line]
    assert sentences and "Raster > urbanmtl" in sentences[0] and "'ai_edge_litert'" in sentences[0], log
    assert list(out.iterdir()) == []

    installed = qgis_process(env, "run", "urbanmtl:install_engine")
    log = installed.stdout + installed.stderr
    assert installed.returncode == 0, log
    folder = profile / "urbanmtl" / f"engine-py{sys.version_info[0]}.{sys.version_info[1]}"
    assert (folder / "ai_edge_litert").is_dir() and "download" in log, log
    assert not (home / ".local" / "lib").exists(), "nothing goes into the user site"

    mapped = qgis_process(env, *run)
    log = mapped.stdout + mapped.stderr
    assert mapped.returncode == 0 and "Traceback" not in log, log
    assert "Engine: /usr/bin/python3" in log and "LiteRT" in log, log
    assert not [p for p in home.rglob("*") if p.name.lower().startswith("tensorflow")], "no TensorFlow in the profile"

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    done = subprocess.run([sys.executable, "-m", "core.predict", str(DEMO), "--hse", str(checkout / "hse.tif"),
                           "--lcz", str(checkout / "lcz.tif")], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    agreement = map_agreement(out / "hse.tif", out / "lcz.tif", checkout / "hse.tif", checkout / "lcz.tif")
    assert agreement.same, agreement.describe()
