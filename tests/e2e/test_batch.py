"""`python -m core.batch` end to end: a real `dask scheduler` with two `dask worker` processes, and the default
LocalCluster, mapping 128 x 128 px crops of the real Sentinel-2 data in ../shared (synthetic scenes without it)
with a tiny network; plus the input rules, the summary and the argument errors, without a cluster."""

from __future__ import annotations

import csv
import filecmp
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from core.cluster.scenes import BatchError, claim_scene, collect_scenes, cpu_count, release_scene
from core.common.errors import UrbanMTLError
from core.network.model import ModelConfig
from core.network.saving import base_card, save_model
from core.mapping.predict import PredictOptions, predict_scene

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
SCENE = DATA / "scene" / "T33UUU_20170216_L1C_13band.tif"
CITIES = sorted((DATA / "cities").glob("*_S2L1C_10band.tif"))
DASK = Path(sys.executable).parent / "dask"
CROP = 128
#: Small tiles: each crop is 9 tiles in 5 network calls, so a scene takes a moment, not an instant.
CLI_FLAGS = ["--tile-size", "64", "--overlap", "16", "--batch-size", "2"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


# --- data: crops, a tiny model, what core.predict writes for each crop ---


def _crop(src_path: Path, dst_path: Path, row: int, col: int) -> Path:
    with rasterio.open(src_path) as src:
        window = Window(col, row, CROP, CROP)
        profile = src.profile.copy()
        profile.update(width=CROP, height=CROP, transform=src.window_transform(window))
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.update_tags(**src.tags())
            for i in range(1, src.count + 1):
                dst.set_band_description(i, src.descriptions[i - 1] or "")
                dst.update_tags(i, **src.tags(i))
    return dst_path


def _make_scenes(folder: Path) -> list[Path]:
    folder.mkdir()
    if SCENE.exists() and len(CITIES) >= 2:
        scenes = [_crop(SCENE, folder / "t33uuu_lakes.tif", 256, 600)]
        for city in CITIES[:2]:
            with rasterio.open(city) as ds:
                row, col = (ds.height - CROP) // 2, (ds.width - CROP) // 2
            scenes.append(_crop(city, folder / city.name.replace("_S2L1C_10band", ""), row, col))
        return scenes
    from tests.core.test_predict import smooth_scene, write_scene    # no ../shared: synthetic scenes

    return [Path(write_scene(folder / f"synthetic{i}.tif", smooth_scene(CROP, CROP, seed=i))) for i in range(3)]


def _tf_threads() -> int:
    """TensorFlow's intra-op threads in this process. Its sums, so the last bit of the HSE values, depend on it:
    workers given the same number write byte for byte what predict_scene writes here."""
    import tensorflow as tf

    return (tf.config.threading.get_intra_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0) or cpu_count())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Crops, a broken file, a tiny model, and what core.predict writes for each crop (and says for the broken
    file) with the batch's flags."""
    from tests.core.test_predict import calibrated_tiny_network

    root = tmp_path_factory.mktemp("batch")
    network = calibrated_tiny_network()
    model = save_model(network, root / "model" / "model.keras", base_card(ModelConfig(base_width=4), network))
    model = str(Path(model).resolve())
    scenes = _make_scenes(root / "scenes")
    broken = root / "scenes" / "broken.tif"
    broken.write_bytes(b"II*\x00 this is not a GeoTIFF, only its first bytes")
    reference = root / "reference"
    options = PredictOptions(tile_size=64, overlap=16, batch_size=2)              # = CLI_FLAGS
    for scene in scenes:
        predict_scene(str(scene.resolve()), str(reference / f"{scene.stem}_hse.tif"),
                      str(reference / f"{scene.stem}_lcz.tif"), model_path=model, options=options)
    with pytest.raises(UrbanMTLError) as failure:
        predict_scene(str(broken.resolve()), str(root / "x_hse.tif"), str(root / "x_lcz.tif"), model_path=model,
                      options=options)
    return {"root": root, "model": model, "scenes": scenes, "broken": broken, "reference": reference,
            "broken_message": " ".join(str(failure.value).split()), "tf_threads": _tf_threads()}


def _batch(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m core.batch ARGS` in a child process."""
    return subprocess.run([sys.executable, "-m", "core.batch", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _elapsed(stdout: str) -> float:
    """The batch's own time, from its last line ("3 done, 0 skipped, 1 failed in 12.3 s; summary: ...")."""
    return float(re.search(r" failed in ([\d.]+) s; summary: ", stdout).group(1))


def _summary(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["scene", "status", "worker", "seconds", "km2", "message"]
    return {row["scene"]: row for row in rows}


def _assert_same_as_predict(out: Path, reference: Path, stem: str, exact: bool = True) -> None:
    """The batch's outputs are core.predict's: the same bytes (with the same TensorFlow thread count), else the
    same grids, tags and LCZ codes, and HSE equal to float32 rounding (TensorFlow's sums depend on its threads)."""
    for name in (f"{stem}_hse.tif", f"{stem}_lcz.tif", f"{stem}_lcz.tif.aux.xml"):
        if exact:
            assert filecmp.cmp(out / name, reference / name, shallow=False), f"{name} differs from core.predict's"
        elif name.endswith(".tif"):
            with rasterio.open(out / name) as got, rasterio.open(reference / name) as ref:
                assert got.profile == ref.profile and got.tags() == ref.tags()
                a, b = got.read(), ref.read()
                assert np.array_equal(a, b) if "_lcz" in name else np.allclose(a, b, rtol=0, atol=1e-6), name


# --- a real scheduler and two real workers ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in processes:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory, data):
    if not DASK.exists():
        pytest.skip("dask (dask[distributed]) is not installed in this environment")
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask-logs")
    address = f"tcp://127.0.0.1:{_free_port()}"
    commands = [[str(DASK), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                 "--no-dashboard", "--dashboard-address", ":0"]]
    commands += [[str(DASK), "worker", address, "--nworkers", "1", "--nthreads", "1", "--name", name,
                  "--no-dashboard", "--memory-limit", "4GB"] for name in ("w1", "w2")]
    # The scheduler runs without the project (tasks reach it as plain values); workers import it.
    scheduler_env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    worker_env = {**ENV, "TF_NUM_INTRAOP_THREADS": str(data["tf_threads"])}    # as in this process
    processes = []
    try:
        for i, command in enumerate(commands):
            log = open(logs / f"{i}.log", "w")
            processes.append(subprocess.Popen(
                command, cwd=REPO if i else logs, env=worker_env if i else scheduler_env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))   # own group: killed with what it spawns
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        _stop(processes)


def test_batch_on_a_scheduler_with_two_workers_maps_resumes_and_reports(data, dask_cluster, tmp_path, capsys):
    from core import batch

    out = tmp_path / "out"
    args = [*map(str, data["scenes"]), str(data["broken"]), "--out-dir", str(out), "--scheduler", dask_cluster,
            "--model", data["model"], *CLI_FLAGS]
    first = _batch(*args)                                          # the real command line
    assert first.returncode == 1, first.stdout + first.stderr
    stems = [p.stem for p in data["scenes"]]
    rows = _summary(out)
    assert sorted(rows) == sorted(stems + ["broken"])
    for stem in stems:
        assert rows[stem]["status"] == "done"
        assert float(rows[stem]["km2"]) == pytest.approx(CROP * CROP / 1e4, abs=1e-3)
        _assert_same_as_predict(out, data["reference"], stem)
    assert rows["broken"]["status"] == "failed"
    assert rows["broken"]["message"] == data["broken_message"]       # the sentence core.predict prints
    assert {row["worker"] for row in rows.values()} == {"w1", "w2"}    # 4 tasks on 2 idle workers: both work
    lines = [line for line in first.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and all(re.match(r"\[[1-4]/4\] ", line) for line in lines)
    assert any(re.search(r": done in [\d.]+ s \([\d.]+ km²\) on w[12]$", line) for line in lines)
    assert "error: " not in first.stderr and "Traceback" not in first.stderr
    assert not list(out.glob(".*")), "temporaries, lock files or markers were left in the output folder"

    capsys.readouterr()
    assert batch.main(args) == 1                                   # again (in this process): resumes
    again = capsys.readouterr().out
    rows = _summary(out)
    assert [rows[s]["status"] for s in stems] == ["skipped"] * 3 and rows["broken"]["status"] == "failed"
    assert all(f"{s}: skipped" in again for s in stems)
    assert _elapsed(again) < _elapsed(first.stdout), (again, first.stdout)  # only the broken file is tried again
    for stem in stems:
        _assert_same_as_predict(out, data["reference"], stem)


# --- the default: a LocalCluster ---


def test_batch_on_a_local_cluster_of_two_workers(data, tmp_path, capsys):
    from core import batch

    out = tmp_path / "local"
    listing = tmp_path / "scenes.txt"
    listing.write_text("# the crops\n\n" + "\n".join(os.path.relpath(p, tmp_path) for p in data["scenes"]) + "\n")
    environ = dict(os.environ)     # in this process: the nanny sets OMP_NUM_THREADS & co. before spawning workers
    try:
        code = batch.main([f"@{listing}", "--out-dir", str(out), "--workers", "2", "--model", data["model"],
                           *CLI_FLAGS])
    finally:
        os.environ.clear()
        os.environ.update(environ)
    output = capsys.readouterr()
    assert code == 0, output.out + output.err
    assert "Local Dask cluster: 2 worker process(es) x 1 thread(s)" in output.err
    assert "dashboard" in output.err.lower()
    rows = _summary(out)
    assert [rows[p.stem]["status"] for p in data["scenes"]] == ["done"] * 3
    assert {row["worker"] for row in rows.values()} <= {"worker-0", "worker-1"}
    same_threads = max(1, cpu_count() // 2) == data["tf_threads"]   # a LocalCluster gives each worker its share
    for scene in data["scenes"]:
        _assert_same_as_predict(out, data["reference"], scene.stem, exact=same_threads)


# --- without a cluster: inputs, markers, argument errors ---


def test_inputs_folders_lists_and_names(tmp_path):
    (tmp_path / "many").mkdir()
    for name in ("b.tif", "a.vrt", "c.SAFE.zip", "notes.txt", ".hidden.tif"):
        (tmp_path / "many" / name).write_bytes(b"x")
    safe = tmp_path / "many" / "S2A_X.SAFE"
    (safe / "GRANULE").mkdir(parents=True)
    (tmp_path / "many" / "other").mkdir()                          # a plain sub-folder: not looked into
    granule = tmp_path / "granule"
    (granule / "IMG_DATA").mkdir(parents=True)
    (granule / "IMG_DATA" / "T33UUU_20170216T102101_B02.jp2").write_bytes(b"x")
    product = tmp_path / "product"
    product.mkdir()
    (product / "MTD_MSIL1C.xml").write_text("<x/>")
    (product / "preview.tif").write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n\ngranule\n  product  \n")
    jobs = collect_scenes([str(tmp_path / "many"), f"@{listing}"], tmp_path / "out")
    assert [j.stem for j in jobs] == ["S2A_X", "a", "b", "c", "granule", "product"]
    assert jobs[-1].source == str(product.resolve()) and jobs[1].hse == str(tmp_path / "out" / "a_hse.tif")
    with pytest.raises(BatchError, match=r"same name 'b'.*many/b.tif.*elsewhere/b.tif"):
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "b.tif").write_bytes(b"x")
        collect_scenes([str(tmp_path / "many"), str(tmp_path / "elsewhere" / "b.tif")], tmp_path / "out")
    with pytest.raises(BatchError, match="does not exist"):
        collect_scenes([str(tmp_path / "missing.tif")], tmp_path / "out")
    with pytest.raises(BatchError, match="holds no scene"):
        collect_scenes([str(tmp_path / "many" / "other")], tmp_path / "out")


def test_a_scene_taken_over_from_a_dead_worker_is_reported(tmp_path):
    assert claim_scene(tmp_path, "a", "batch1", "w1") is None
    assert claim_scene(tmp_path, "a", "batch1", "w2") == "w1"      # w1 died holding it; w2 has it now
    release_scene(tmp_path, "a")
    assert claim_scene(tmp_path, "a", "batch2", "w1") is None      # a marker of another batch is not a retry


def test_argument_errors_exit_2(data, tmp_path, monkeypatch, capsys):
    from core import batch
    from core.cluster import client

    scene = str(data["scenes"][0])
    with pytest.raises(SystemExit) as exit_info:
        batch.main([scene])                                        # --out-dir is required
    assert exit_info.value.code == 2
    assert batch.main([scene, str(tmp_path / "x" / scene.split("/")[-1]), "--out-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.setattr(client, "CONNECT_TIMEOUT_S", 1)
    code = batch.main([scene, "--out-dir", str(tmp_path / "o"), "--scheduler", f"tcp://127.0.0.1:{_free_port()}",
                       "--model", data["model"]])
    assert code == 2 and "Cannot reach the Dask scheduler" in capsys.readouterr().err
    assert batch.main([scene, "--out-dir", str(tmp_path / "o"), "--tile-size", "30"]) == 2
