"""The fine-tuning child process's output folder (core.finetune_worker.RunFolder): new or empty only, cleared after
a failed or cancelled run, and what a killed run left is removed by the next run instead of blocking it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.common.errors import UrbanMTLError
from core.common.run_folder import MARKER, RunFolder, remove_stopped_run
from core.finetune_worker import build_parser, read_params

REPO = Path(__file__).resolve().parents[2]


def test_a_failed_or_cancelled_run_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(UrbanMTLError):
        with RunFolder(out, print):
            assert (out / MARKER).exists()
            (out / "maps").mkdir()
            (out / "maps" / "lcz_before.tif").write_bytes(b"x")
            (out / "state.json").write_text("{}")
            raise UrbanMTLError("bad polygons")
    assert not out.exists() and (tmp_path / "new").is_dir()      # only what the run created goes
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeyboardInterrupt):
        with RunFolder(empty, print):
            (empty / "config.json").write_text("{}")
            raise KeyboardInterrupt
    assert empty.is_dir() and list(empty.iterdir()) == []        # the user's (empty) folder stays


def test_a_finished_run_keeps_its_files_and_drops_the_marker(tmp_path):
    out = tmp_path / "run"
    with RunFolder(out, print):
        (out / "model.keras").write_bytes(b"model")
    assert sorted(p.name for p in out.iterdir()) == ["model.keras"]


def test_only_a_new_or_empty_folder_is_accepted(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"a finished run")
    (run / "accuracy.json").write_text("{}")
    with pytest.raises(UrbanMTLError, match=r"already holds a training run \(model.keras, accuracy.json\)\. Choose"):
        RunFolder(run, print).__enter__()
    other = tmp_path / "documents"
    other.mkdir()
    (other / "thesis.odt").write_bytes(b"mine")
    with pytest.raises(UrbanMTLError, match=r"is not empty \(thesis.odt\)"):
        RunFolder(other, print).__enter__()
    assert (other / "thesis.odt").read_bytes() == b"mine" and not (other / MARKER).exists()


def test_a_killed_run_is_removed_by_the_next_one_and_a_live_one_blocks_it(tmp_path):
    out = tmp_path / "run"
    # A live run in another process holds the marker's lock.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from core.common.run_folder import RunFolder\n"
        f"with RunFolder({str(out)!r}, print):\n"
        f"    open({str(out / 'state.json')!r}, 'w').write('{{}}')\n"
        "    print('ready', flush=True); sys.stdin.read()\n")],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert remove_stopped_run(out) is None
        with pytest.raises(UrbanMTLError, match="Another training run is writing"):
            RunFolder(out, print).__enter__()
        assert (out / "state.json").exists()
    finally:
        holder.kill()                                             # killed: no clean-up of its own
        holder.wait()
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "state.json"]
    said = []
    with RunFolder(out, said.append):
        pass
    assert said == [f"Removed what an earlier, stopped run left in {out}: state.json."]
    assert out.is_dir() and list(out.iterdir()) == []


def test_params_need_the_four_inputs_and_epochs_0_means_automatic(tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"image": "s2.tif", "polygons": "a.gpkg", "field": "lcz", "out": "run",
                                  "epochs": 0}))
    assert read_params(build_parser().parse_args([str(params)]))["epochs"] is None
    with pytest.raises(UrbanMTLError, match="No out given"):
        read_params(build_parser().parse_args(["--image", "s2.tif", "--polygons", "a.gpkg"]))
    params.write_text(json.dumps({"image": "s2.tif", "polygons": "a.gpkg", "field": "lcz", "out": "run",
                                  "tiles": 3}))
    with pytest.raises(UrbanMTLError, match="Unknown parameter"):
        read_params(build_parser().parse_args([str(params)]))
