"""Installing the engine's packages for QGIS's own Python into a folder of the QGIS profile (urbanmtl:install_engine):
never into the user site or QGIS's site-packages, and only the engine process puts the folder on its path.

The steps, each a function of its inputs so the decisions are tested without a network:
1. `constraints`: every distribution the Python already has, pinned to its version, so nothing QGIS's own modules
   were built against (numpy above all: Debian's scipy and rasterio are built for numpy 1.x) is replaced;
2. `resolve`: pip's resolver in a dry run against that Python (`--dry-run --report`): exactly what is missing;
3. the download size of those files said, then `pip install --target STAGE --no-deps` of exactly them, pip's
   progress going to the log;
4. `verify`: the engine imported by that Python with STAGE on its path, numpy still the Python's own;
5. STAGE renamed over the engine folder. A failure at any step removes STAGE and leaves the previous engine as it
   was; its cause is said in one sentence (`pip_failure`).
This module imports no qgis.core (only Qt's translation, through ui.interpreter)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence

from .interpreter import PLUGIN_DIR, EngineError, hidden_window, tr

#: What the mapping engine imports beyond the standard library (core.worker on LiteRT): import name -> requirement.
MAPPING_PACKAGES = {"ai_edge_litert": "ai-edge-litert==2.3.0", "rasterio": "rasterio", "numpy": "numpy"}
#: What training and fine-tuning add (core.finetune_worker): TensorFlow's CPU build, Keras 3, scikit-learn.
TRAINING_PACKAGES = {"tensorflow": "tensorflow-cpu==2.19.0", "keras": "keras==3.15.1",
                     "sklearn": "scikit-learn==1.6.1"}
#: What `verify` imports with the new folder on the path, per set.
MAPPING_CHECK = "import numpy, rasterio; from ai_edge_litert.interpreter import Interpreter; import core.worker"
TRAINING_CHECK = "import tensorflow, keras, sklearn.ensemble; import core.finetune_worker"
PIP_TIMEOUT = 3600

#: A script run by the target Python: its distributions as pip constraints, and its numpy version.
LIST_CODE = (
    "import importlib.metadata as m, json, sys\n"
    "pins = {}\n"
    "for d in m.distributions():\n"
    "    name = (d.metadata['Name'] or '').strip()\n"
    "    if name and d.version and name.lower() not in pins:\n"
    "        pins[name.lower()] = name + '==' + d.version\n"
    "print(json.dumps({'pins': sorted(pins.values()), 'python': '%d.%d.%d' % sys.version_info[:3]}))\n"
)


def requirements(training: bool, system: Optional[str] = None) -> list[str]:
    """The requirements to resolve: the mapping engine's, and with training TensorFlow (the `tensorflow` wheel on
    Windows and macOS, where TensorFlow publishes no -cpu build of 2.19), Keras and scikit-learn."""
    system = system or platform.system()
    reqs = list(MAPPING_PACKAGES.values())
    if training:
        tf = TRAINING_PACKAGES["tensorflow"]
        reqs += [tf if system == "Linux" else tf.replace("tensorflow-cpu", "tensorflow")]
        reqs += [TRAINING_PACKAGES["keras"], TRAINING_PACKAGES["sklearn"]]
    return reqs


def pip_environment(base: Optional[dict] = None, extra_path: Sequence[str] = ()) -> dict[str, str]:
    """The environment pip and the checks run in: no user site (pip --user's packages would shadow QGIS's), no
    PYTHONPATH but `extra_path`, pip quiet about its own version."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in ("PYTHONPATH", "PIP_USER")}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONIOENCODING="utf-8")
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(extra_path)
    return env


def pip_failure(output: str, what: str) -> str:
    """One sentence for a failed pip run, from its output: no network, a wheel missing for this platform, a full
    disk, no pip, a conflict with QGIS's own packages; else pip's last line."""
    text = output.lower()
    machine = f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
    if "no module named pip" in text:
        return tr("QGIS's Python has no pip, so the engine cannot be installed: install pip for it (on Debian and "
                  "Ubuntu: sudo apt-get install python3-pip) and run Install engine again.")
    if "no space left on device" in text or "errno 28" in text:
        return tr("The disk is full: {what} needs more free space. Free some and run Install engine again.").format(
            what=what)
    if any(s in text for s in ("failed to establish a new connection", "temporary failure in name resolution",
                               "network is unreachable", "connecttimeout", "readtimeout", "could not fetch url",
                               "connection refused", "name or service not known", "proxyerror")):
        return tr("The package index cannot be reached (no network, or a proxy in the way), so nothing was "
                  "installed: connect to the internet (or set pip's proxy) and run Install engine again.")
    if "no matching distribution found" in text or "could not find a version that satisfies" in text:
        missing = _missing_requirement(output)
        return tr("{package} publishes no wheel for this platform ({machine}), so nothing was installed. The "
                  "README says what such a platform can use.").format(package=missing or tr("A package"),
                                                                     machine=machine)
    if "resolutionimpossible" in text or "conflicting dependencies" in text or "conflict is caused by" in text:
        return tr("The engine's packages conflict with the versions QGIS's Python already has, so nothing was "
                  "installed. pip said: {line}").format(line=_last_line(output))
    return tr("pip failed while installing {what}, and nothing was changed: {line}").format(
        what=what, line=_last_line(output))


def _missing_requirement(output: str) -> Optional[str]:
    for line in output.splitlines():
        if "No matching distribution found for" in line:
            return line.split("found for", 1)[1].strip()
    return None


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors or lines or ["(no output)"])[-1][:300]


def run_pip(python: str, args: Sequence[str], env: dict, log: Callable[[str], None],
            is_cancelled: Callable[[], bool] = lambda: False) -> tuple[int, str]:
    """`python -m pip ARGS`, each output line to `log` as it comes; (exit status, the whole output). A cancel stops
    pip at once (exit status -1)."""
    command = [python, "-s", "-m", "pip", *args]
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                encoding="utf-8", errors="replace", env=env, cwd=tempfile.gettempdir(),
                                **hidden_window())
    except OSError as exc:
        return 1, f"{exc}"
    lines: list[str] = []
    assert proc.stdout is not None
    started = time.monotonic()
    for line in proc.stdout:
        lines.append(line.rstrip())
        if line.strip():
            log(line.rstrip())
        if is_cancelled() or time.monotonic() - started > PIP_TIMEOUT:
            proc.kill()
            proc.wait()
            return -1, "\n".join(lines)
    return proc.wait(), "\n".join(lines)


def constraints(python: str, env: dict) -> tuple[list[str], str]:
    """(every distribution `python` has as 'name==version', its version) — pip's constraints for the install."""
    try:
        done = subprocess.run([python, "-s", "-c", LIST_CODE], capture_output=True, text=True, timeout=120, env=env,
                              cwd=tempfile.gettempdir(), **hidden_window())
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        raise EngineError(tr("The Python interpreter '{python}' cannot be run to list its packages; check it in "
                             "the advanced parameter 'Python interpreter'.").format(python=python)) from None
    return list(info["pins"]), str(info["python"])


def resolve(python: str, reqs: Sequence[str], pins: Sequence[str], env: dict, work: Path,
            managed: bool) -> list[dict]:
    """What pip would install into `python` for `reqs`, its installed packages held to `pins`: the report's
    entries ({"name", "version", "url"}). Nothing is installed (a dry run)."""
    (work / "constraints.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
    report = work / "report.json"
    args = ["install", "--dry-run", "--quiet", "--only-binary", ":all:", "--report", str(report),
            "--constraint", str(work / "constraints.txt"), *(["--break-system-packages"] if managed else []), *reqs]
    code, output = run_pip(python, args, env, lambda line: None)
    if code != 0:
        raise EngineError(pip_failure(output, tr("the engine")))
    entries = json.loads(report.read_text(encoding="utf-8")).get("install", [])
    return [{"name": e["metadata"]["name"], "version": e["metadata"]["version"],
             "url": (e.get("download_info") or {}).get("url", "")} for e in entries]


def download_size(entries: Sequence[dict], opener: Callable = urllib.request.urlopen) -> Optional[int]:
    """Bytes to download for `entries` (each file's Content-Length, or its size for a local file), None when a size
    cannot be told."""
    total = 0
    for entry in entries:
        url = entry.get("url") or ""
        try:
            if url.startswith("file://"):
                total += os.path.getsize(urllib.request.url2pathname(url[len("file://"):]))
                continue
            with opener(urllib.request.Request(url, method="HEAD"), timeout=20) as response:
                total += int(response.headers.get("Content-Length"))
        except (OSError, ValueError, TypeError):
            return None
    return total


def verify(python: str, stage: Path, check: str, base_numpy: Optional[str], env_base: Optional[dict] = None) -> str:
    """Import the engine with `python` and `stage` on its path; numpy must be the Python's own version. Returns the
    versions it reports; raises EngineError with the import's last line otherwise."""
    code = (f"{check}\nimport numpy, json\nprint(json.dumps({{'numpy': numpy.__version__, 'numpy_at': "
            f"numpy.__file__}}))")
    env = pip_environment(env_base, [str(stage), str(PLUGIN_DIR)])
    try:
        done = subprocess.run([python, "-s", "-c", code], capture_output=True, text=True, timeout=300, env=env,
                              cwd=tempfile.gettempdir(), **hidden_window())
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineError(tr("The installed engine could not be tried: {error}").format(error=exc)) from None
    if done.returncode != 0:
        raise EngineError(tr("The packages installed, but the engine does not import with them ({line}), so the "
                             "previous state was kept.").format(line=_last_line(done.stderr)))
    info = json.loads(done.stdout.strip().splitlines()[-1])
    if base_numpy and info["numpy"] != base_numpy:
        raise EngineError(tr("The install would bring numpy {new} beside QGIS's numpy {old}, which QGIS's modules "
                             "are built for, so it was not kept.").format(new=info["numpy"], old=base_numpy))
    return info["numpy"]


def replace_folder(stage: Path, folder: Path, attempts: int = 10) -> None:
    """Put `stage` where `folder` was (the old one removed after), retrying while Windows holds a file open."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    for attempt in range(attempts):
        try:
            if folder.exists():
                os.replace(folder, old)
            os.replace(stage, folder)
            break
        except PermissionError:
            if attempt == attempts - 1:
                raise EngineError(tr("The engine folder {folder} is in use (an engine process still runs?); close "
                                     "it and run Install engine again.").format(folder=folder)) from None
            time.sleep(0.5)
    shutil.rmtree(old, ignore_errors=True)


def has_training(folder: Path) -> bool:
    """Whether an engine folder holds what training needs (TensorFlow), so a new install keeps it."""
    return folder.is_dir() and any(folder.glob("tensorflow*.dist-info"))


def install_engine(python: str, folder: Path, training: bool, log: Callable[[str], None],
                   is_cancelled: Callable[[], bool] = lambda: False, managed: bool = False,
                   env_base: Optional[dict] = None) -> dict:
    """Install the engine's packages for `python` into `folder` (see the module docstring); returns what was done.
    Raises EngineError, with one sentence, leaving the previous folder as it was."""
    env = pip_environment(env_base)
    training = training or has_training(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(tr("The engine folder {folder} cannot be made ({error}).").format(
            folder=folder, error=exc.strerror or exc)) from None
    stage = folder.with_name(folder.name + ".new")
    with tempfile.TemporaryDirectory(prefix="urbanmtl-pip-") as tmp:
        pins, version = constraints(python, env)
        base_numpy = next((p.split("==", 1)[1] for p in pins if p.lower().startswith("numpy==")), None)
        reqs = requirements(training)
        log(tr("Resolving {reqs} for {python} (Python {version}); its {count} installed packages keep their "
               "versions.").format(reqs=", ".join(reqs), python=python, version=version, count=len(pins)))
        entries = resolve(python, reqs, pins, env, Path(tmp), managed)
        size = download_size(entries) if entries else 0
        names = ", ".join(f"{e['name']} {e['version']}" for e in entries) or tr("nothing")
        log(tr("To install into {folder}: {names}; download {size}.").format(
            folder=folder, names=names, size=tr("unknown size") if size is None else f"{size / 1e6:.0f} MB"))
        free = shutil.disk_usage(folder.parent).free
        if size and free < 4 * size:
            raise EngineError(tr("The disk is full: the engine needs about {need} MB in {folder}, but only {free} MB "
                                 "are free. Free some space and run Install engine again.").format(
                need=round(4 * size / 1e6), folder=folder.parent, free=round(free / 1e6)))
        shutil.rmtree(stage, ignore_errors=True)
        try:
            stage.mkdir()
            if entries:
                args = ["install", "--target", str(stage), "--no-deps", "--only-binary", ":all:", "--progress-bar",
                        "off", "--no-warn-script-location", *[f"{e['name']}=={e['version']}" for e in entries]]
                code, output = run_pip(python, args, env, log, is_cancelled)
                if code == -1:
                    raise EngineError(tr("Install engine was cancelled; the previous state is kept."))
                if code != 0:
                    raise EngineError(pip_failure(output, tr("the engine")))
            numpy = verify(python, stage, MAPPING_CHECK + ("\n" + TRAINING_CHECK if training else ""), base_numpy,
                           env_base)
            replace_folder(stage, folder)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    log(tr("The engine is installed in {folder} (numpy {numpy}, QGIS's own).").format(folder=folder, numpy=numpy))
    return {"folder": str(folder), "installed": [f"{e['name']}=={e['version']}" for e in entries],
            "download_bytes": size, "training": training}
