"""Ctrl-C a few seconds into real work: the training commands stop within seconds with exit status 130, one sentence
saying they stopped, no traceback, and nothing half-written: core.train keeps what --resume needs, core.finetune
removes what it had written into its (new) output folder. Real subprocesses, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import fakedata
from tests.core.test_finetune import _scene_with_areas

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals")


def start(args: list[str], cwd: Path = REPO) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-u", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 240) -> list[str]:
    """Read stdout until a line holds `needle` (the process must still run then)."""
    lines, deadline = [], time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"'{needle}' never came; output so far:\n{''.join(lines)}\n{proc.stderr.read()}")


def interrupt(proc: subprocess.Popen) -> tuple[int, str, float]:
    time.sleep(2.0)                                   # a few seconds into the work itself
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, time.monotonic() - sent


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith(".urbanmtl"))


def test_ctrl_c_stops_training_and_keeps_what_resume_needs(tmp_path):
    data = fakedata.make_so2sat_h5(tmp_path / "patches.h5", n=256)
    run = tmp_path / "run"
    proc = start(["-m", "core.train", "--data", str(data), "--out", str(run), "--epochs", "200", "--batch-size", "8", "--variant", "lcz",
                  "--base-width", "8"])
    wait_for_line(proc, "Epoch")
    code, err, seconds = interrupt(proc)
    assert code == 130 and seconds < 30, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: stopped by SIGINT;") and "--resume" in last, err
    assert leftovers(run) == []
    assert (run / "config.json").exists()


def test_ctrl_c_stops_finetuning_and_removes_what_it_wrote(tmp_path):
    image, polygons = _scene_with_areas(tmp_path)
    run = tmp_path / "run"
    proc = start(["-m", "core.finetune", "--image", str(image), "--polygons", str(polygons), "--field", "klass",
                  "--out", str(run), "--epochs", "50"])
    wait_for_line(proc, "Mapping the image")
    code, err, seconds = interrupt(proc)
    assert code == 130 and seconds < 30, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: stopped by SIGINT;"), err
    assert not run.exists() or list(run.iterdir()) == []


def test_ctrl_c_stops_a_batch_and_leaves_no_temporary_file(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    data = rng.integers(500, 3000, (13, 1536, 1536)).astype(np.uint16)
    for i in range(6):
        fakedata.write_raster(scenes / f"s{i}.tif", data)
    out = tmp_path / "out"
    proc = start(["-m", "core.batch", str(scenes), "--out-dir", str(out), "--workers", "1"])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not any(".tmp" in p.name for p in out.glob("*")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)                                # until a worker writes its first temporary
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)                    # while it maps the first of six scenes
    _, err = proc.communicate(timeout=60)
    code, seconds = proc.returncode, time.monotonic() - sent
    assert code == 130 and seconds < 30, err
    assert "Traceback" not in err and "interrupted (SIGINT)" in err.strip().splitlines()[-1], err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") or ".tmp" in p.name) == []
    assert "pending" in (out / "summary.csv").read_text()
