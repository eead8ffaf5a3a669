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

    explicit, setting, from_env = (executable(tmp_path / name / "python") for name in ("p", "s", "e"))
    checkout = tmp_path / "plugin"
    venv = executable(checkout / ".venv" / "bin" / "python")
    env = {interpreter.ENV_VAR: from_env}

    assert interpreter.find_python(explicit, setting, env, checkout).path == explicit
    assert interpreter.find_python(None, setting, env, checkout).path == setting
    chosen = interpreter.find_python(None, "", env, checkout)
    assert chosen.path == from_env and interpreter.ENV_VAR in chosen.source
    assert interpreter.find_python(None, None, {}, checkout).path == venv
    system = interpreter.find_python(None, None, {}, tmp_path / "no_venv_here")
    assert system.path == interpreter.SYSTEM_PYTHON and system.source == "the system Python"
    with pytest.raises(interpreter.EngineError, match=r"setting urbanmtl/python"):
        interpreter.find_python(None, str(tmp_path / "gone"), env, checkout)


def test_child_environment_imports_core_and_drops_qgis_settings(plugin_dir):
    from urbanmtl.ui import interpreter

    env = interpreter.child_environment({"PYTHONHOME": "/opt/qgis", "QT_QPA_PLATFORM": "offscreen",
                                    "PYTHONPATH": "/somewhere", "PATH": "/usr/bin"})
    assert "PYTHONHOME" not in env and "QT_QPA_PLATFORM" not in env
    assert env["PYTHONPATH"].split(os.pathsep) == [str(interpreter.PLUGIN_DIR), "/somewhere"]
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert (interpreter.PLUGIN_DIR / "core" / "worker.py").is_file()


def test_probe_of_the_venv_finds_everything_and_is_cached(plugin_dir):
    from urbanmtl.ui import interpreter

    python = str(REPO / ".venv" / "bin" / "python")
    if not os.path.exists(python):
        pytest.skip("the venv is missing (make venv)")
    info = interpreter.probe(python)
    assert info.missing == [] and info.venv and info.version.startswith("3.")
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
    assert events[0]["event"] == "ready" and events[0]["tensorflow"].startswith("2.")
    error = events[-1]
    assert error["event"] == "error" and error["kind"] == "user", events
    assert "holiday_photo.tif" in error["message"] and "detail" not in error
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "hse.tif").exists()


def test_worker_reports_a_missing_package(tmp_path):
    """Run with a sitecustomize that hides TensorFlow: kind 'missing', the module named, exit status 3."""
    from .test_plugin import fake_python

    python = fake_python(tmp_path, ("tensorflow",))
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"input": "x.tif", "hse": "h.tif", "lcz": "l.tif"}))
    done = subprocess.run([python, "-m", "core.worker", str(params)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=str(REPO), timeout=120)
    event = json.loads(done.stdout.splitlines()[-1])
    assert event == {"event": "error", "kind": "missing", "module": "tensorflow", "message": event["message"]}
    assert done.returncode == 3
