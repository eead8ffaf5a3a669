"""The engine process: which Python runs it (ui/engine.py), its JSON-lines protocol (core/worker.py), leftovers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, synthetic_dn, write_geotiff

pytestmark = pytest.mark.qgis


def executable(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_python_is_found_in_the_documented_order(plugin_dir, tmp_path):
    from urbanmtl.ui import interpreter
    from urbanmtl.ui.engine_python import QgisPython

    explicit, setting, from_env = (executable(tmp_path / name / "python") for name in ("p", "s", "e"))
    checkout = tmp_path / "plugin"
    venv = executable(checkout / ".venv" / "bin" / "python")
    env = {interpreter.ENV_VAR: from_env}
    own = QgisPython(executable(tmp_path / "qgis" / "python3"), {"PYTHONHOME": "/qgis/home"})

    assert interpreter.find_python(explicit, setting, env, checkout).path == explicit
    assert interpreter.find_python(None, setting, env, checkout).path == setting
    chosen = interpreter.find_python(None, "", env, checkout)
    assert chosen.path == from_env and interpreter.ENV_VAR in chosen.source
    assert interpreter.find_python(None, None, {}, checkout).path == venv
    qgis = interpreter.find_python(None, None, {}, tmp_path / "no_venv_here", profile_dir=str(tmp_path / "profile"),
                                   qgis=lambda: own)
    assert qgis.path == own.path and qgis.source == "QGIS's own Python" and qgis.env == {"PYTHONHOME": "/qgis/home"}
    assert qgis.engine_dir.startswith(str(tmp_path / "profile" / "urbanmtl" / "engine-py3."))
    with pytest.raises(interpreter.EngineError, match="QGIS's own Python was not found"):
        interpreter.find_python(None, None, {}, tmp_path / "no_venv_here", qgis=lambda: None)
    with pytest.raises(interpreter.EngineError, match=r"setting urbanmtl/python.*urbanmtl:install_engine"):
        interpreter.find_python(None, str(tmp_path / "gone"), env, checkout)


def test_child_environment_imports_core_and_drops_qgis_settings(plugin_dir):
    from urbanmtl.ui import interpreter

    base = {"PYTHONHOME": "/opt/qgis", "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": "/somewhere", "PATH": "/usr/bin"}
    env = interpreter.child_environment(None, base)
    assert "PYTHONHOME" not in env and "QT_QPA_PLATFORM" not in env and "PYTHONNOUSERSITE" not in env
    assert env["PYTHONPATH"].split(os.pathsep) == [str(interpreter.PLUGIN_DIR), "/somewhere"]
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert (interpreter.PLUGIN_DIR / "core" / "worker.py").is_file()
    own = interpreter.Interpreter("C:/OSGeo4W/apps/Python312/python.exe", "QGIS's own Python",
                                  {"PYTHONHOME": "C:/OSGeo4W/apps/Python312"}, "/profile/urbanmtl/engine-py3.12")
    env = interpreter.child_environment(own, base)
    assert env["PYTHONHOME"] == "C:/OSGeo4W/apps/Python312"      # what OSGeo4W's python.exe needs
    assert env["PYTHONPATH"].split(os.pathsep) == [str(interpreter.PLUGIN_DIR), "/profile/urbanmtl/engine-py3.12",
                                                   "/somewhere"]
    assert env["PYTHONNOUSERSITE"] == "1"                       # pip --user's packages stay out


def test_probe_of_the_venv_finds_everything_and_is_cached(plugin_dir):
    from urbanmtl.ui import interpreter

    python = str(REPO / ".venv" / "bin" / "python")
    if not os.path.exists(python):
        pytest.skip("the venv is missing (make venv)")
    info = interpreter.probe(python)
    assert info.absent == [] and info.missing("training") == [] and info.venv and info.version.startswith("3.")
    assert interpreter.probe(python) is info


def test_leftovers_match_the_engine_names_and_spare_other_runs(plugin_dir, tmp_path):
    """The cleanup after a kill removes exactly what core.outputs writes for these outputs."""
    from urbanmtl.core.outputs.temporaries import temporary_name
    from urbanmtl.ui import engine

    final = tmp_path / "hse.tif"
    tmp = temporary_name(final)
    made = [tmp, tmp.with_name(tmp.name + ".aux.xml"), tmp.with_name(tmp.stem + ".cog" + tmp.suffix)]
    kept = [tmp_path / ".hse_2.0123abcd.tmp.tif", tmp_path / "hse.tif.bak", tmp_path / ".lcz.0123abcd.tmp.tif"]
    for path in made + kept:
        path.write_bytes(b"x")
    lock = tmp_path / f".hse.tif{engine.LOCK_SUFFIX}"
    lock.write_bytes(b"")
    removed = engine.remove_temporary_files([str(final)], since=0.0)
    assert sorted(removed) == sorted(made + [lock])
    assert all(path.exists() for path in kept)

    # A lock held by a live run: nothing of it is touched.
    import fcntl

    for path in made:
        path.write_bytes(b"x")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert engine.remove_temporary_files([str(final)], since=0.0) == []
        assert all(path.exists() for path in made)
    finally:
        os.close(fd)


def test_worker_speaks_json_lines_and_reports_user_errors_without_a_traceback(tmp_path):
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip("the venv is missing (make venv)")
    photo = write_geotiff(tmp_path / "holiday_photo.tif", synthetic_dn(16, 16, 3))
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"input": str(photo), "hse": str(tmp_path / "hse.tif"),
                                  "lcz": str(tmp_path / "lcz.tif"), "options": {"device": "cpu"}}))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([str(python), "-m", "core.worker", str(params)], capture_output=True, text=True,
                          env=env, cwd=str(REPO), timeout=300)
    events = [json.loads(line) for line in done.stdout.splitlines()]      # every stdout line is JSON
    assert events[0]["event"] == "ready" and events[0]["runtime"] == "litert" and events[0]["version"]
    error = events[-1]
    assert error["event"] == "error" and error["kind"] == "user", events
    assert "holiday_photo.tif" in error["message"] and "detail" not in error
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "hse.tif").exists()


@pytest.mark.parametrize("blocked,options,module", [
    (("tensorflow", "ai_edge_litert"), {}, "ai_edge_litert"),        # no runtime at all
    (("tensorflow",), {"runtime": "tensorflow"}, "tensorflow"),     # TensorFlow asked for, not there
    (("ai_edge_litert",), {"runtime": "litert"}, "ai_edge_litert"),
])
def test_worker_reports_a_missing_package(tmp_path, blocked, options, module):
    """Run with a sitecustomize that hides packages: kind 'missing', the module named, exit status 3."""
    from .test_plugin import fake_python

    python = fake_python(tmp_path, blocked)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"input": "x.tif", "hse": "h.tif", "lcz": "l.tif", "options": options}))
    done = subprocess.run([python, "-m", "core.worker", str(params)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=str(REPO), timeout=120)
    event = json.loads(done.stdout.splitlines()[-1])
    assert event == {"event": "error", "kind": "missing", "module": module, "message": event["message"]}
    assert done.returncode == 3
