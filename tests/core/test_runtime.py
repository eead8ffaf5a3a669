"""The network's runtimes: the LiteRT export written with every saved model, the choice between LiteRT and TensorFlow,
the same maps from both on a real scene (at the defaults, with an odd scene size, across tile sizes), a mapping run
on LiteRT that never imports TensorFlow (a real `python -m core.predict` process with TensorFlow made unimportable),
and the threads XNNPACK gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from core.common.errors import UrbanMTLError
from core.common.options import PredictOptions
from core.mapping.agreement import map_agreement
from core.mapping.predict import predict_scene
from core.network import runtime as runtime_module
from core.network.files import DEFAULT_MODEL_PATH, LITERT_KEY, fixed_litert_name, litert_export, read_card
from core.network.inference import NetworkRunner
from core.network.litert import LiteRTRunner, cpu_threads
from core.network.model import ModelConfig, build_networks
from core.network.runtime import choose_runtime
from core.network.saving import base_card, save_model

REPO = Path(__file__).resolve().parents[2]
DEMO_SCENE = REPO / "data" / "demo" / "montpellier_20171030_S2L1C_10band.tif"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny multitask model saved as the engine saves every model: .keras, card and its LiteRT files."""
    config = ModelConfig(base_width=4)
    network = build_networks(config)[1]
    card = base_card(config, network)
    card["training"] = {"config": {"patch_size": 64}}        # windowed attention of 32 px at 20 m
    return save_model(network, tmp_path_factory.mktemp("tiny") / "model.keras", card)


def test_every_saved_model_carries_its_litert_export_named_in_its_card(tiny):
    card = read_card(tiny)
    entry = card[LITERT_KEY]
    assert entry["attention_window"] == 32 and entry["file"] == "model.tflite"
    assert (tiny.parent / "model.tflite").stat().st_size > 0
    fixed = entry["fixed"][0]
    assert fixed["shape"] == [1, 512, 512, 10] and fixed["file"] == fixed_litert_name((1, 512, 512, 10))
    export = litert_export(tiny, card)
    assert export is not None and export.window == 32 and (1, 512, 512, 10) in export.fixed


def test_saving_without_the_export_removes_the_old_files(tmp_path):
    config = ModelConfig(base_width=4)
    network = build_networks(config)[1]
    path = save_model(network, tmp_path / "model.keras", base_card(config, network))
    assert sorted(p.name for p in tmp_path.glob("*.tflite")) == ["model.tflite", "model_4x256x256.tflite"]
    save_model(network, path, base_card(config, network), litert=False)
    assert list(tmp_path.glob("*.tflite")) == [] and LITERT_KEY not in read_card(path)


def test_litert_runs_the_network_as_tensorflow_does_on_any_tile_shape(tiny):
    from core.network.export import mapping_network
    from core.network.saving import load_model

    loaded = load_model(tiny)
    mapping, _ = mapping_network(loaded.network, loaded.card)
    tf_runner = NetworkRunner(mapping, "/CPU:0")
    lite = LiteRTRunner(litert_export(tiny, loaded.card), threads=2)
    rng = np.random.default_rng(0)
    for shape in ((1, 512, 512, 10), (2, 136, 264, 10), (1, 16, 16, 10)):
        x = rng.uniform(0, 0.4, shape).astype(np.float32)
        (h0, l0), (h1, l1) = tf_runner(x), lite(x)
        assert h1.shape == h0.shape == shape[:1] + (shape[1] // 2, shape[2] // 2)
        assert np.abs(h0 - h1).max() < 1e-4 and np.abs(l0 - l1).max() < 1e-4


def test_a_damaged_litert_file_is_one_sentence(tmp_path, tiny):
    for f in tiny.parent.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "model.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(UrbanMTLError, match="Cannot load the LiteRT model .*export it again"):
        LiteRTRunner(litert_export(tmp_path / "model.keras", read_card(tmp_path / "model.keras")), threads=1)


# --- the choice ---


def test_auto_takes_litert_on_the_cpu_and_tensorflow_where_litert_cannot(tiny, monkeypatch, tmp_path):
    card = read_card(tiny)
    assert choose_runtime("auto", "auto", tiny, card, 32).name == "litert"
    assert choose_runtime("auto", "cpu", tiny, card, 32).name == "litert"
    gpu = choose_runtime("auto", "gpu", tiny, card, 32)
    assert gpu.name == "tensorflow" and "GPU" in gpu.reason
    tile = choose_runtime("auto", "auto", tiny, card, None)          # --attention tile
    assert tile.name == "tensorflow" and "attention tile" in tile.reason
    no_export = {k: v for k, v in card.items() if k != LITERT_KEY}
    assert "no LiteRT export" in choose_runtime("auto", "auto", tiny, no_export, 32).reason
    assert choose_runtime("tensorflow", "auto", tiny, card, 32).name == "tensorflow"
    real = runtime_module.installed
    monkeypatch.setattr(runtime_module, "installed", lambda m: False if m == "ai_edge_litert" else real(m))
    fallback = choose_runtime("auto", "auto", tiny, card, 32)
    assert fallback.name == "tensorflow" and "not installed" in fallback.reason and "Intel Macs" in fallback.reason
    with pytest.raises(UrbanMTLError, match="pip install ai-edge-litert.*--runtime tensorflow"):
        choose_runtime("litert", "auto", tiny, card, 32)


def test_a_gpu_with_tensorflows_cuda_build_takes_tensorflow(tiny, monkeypatch):
    monkeypatch.setattr(runtime_module, "nvidia_gpu_present", lambda: True)
    monkeypatch.setattr(runtime_module, "tensorflow_can_use_gpu", lambda: True)
    assert choose_runtime("auto", "auto", tiny, read_card(tiny), 32).name == "tensorflow"
    assert choose_runtime("auto", "cpu", tiny, read_card(tiny), 32).name == "litert"
    monkeypatch.setattr(runtime_module, "tensorflow_can_use_gpu", lambda: False)    # tensorflow-cpu beside a GPU
    assert choose_runtime("auto", "auto", tiny, read_card(tiny), 32).name == "litert"


def test_litert_asked_for_where_it_cannot_map_says_why(tiny):
    card = read_card(tiny)
    with pytest.raises(UrbanMTLError, match="LiteRT maps on the CPU.*--runtime tensorflow"):
        choose_runtime("litert", "gpu", tiny, card, 32)
    with pytest.raises(UrbanMTLError, match="no LiteRT export.*python -m core.export_litert"):
        choose_runtime("litert", "auto", tiny, {k: v for k, v in card.items() if k != LITERT_KEY}, 32)
    with pytest.raises(UrbanMTLError, match="64 px windows, not each tile"):
        choose_runtime("litert", "auto", tiny, card, None)


def test_no_tensorflow_where_it_is_needed_is_one_sentence(tiny, monkeypatch):
    real = runtime_module.installed
    monkeypatch.setattr(runtime_module, "installed", lambda m: False if m == "tensorflow" else real(m))
    with pytest.raises(UrbanMTLError, match="needs TensorFlow .*GPU.*not installed.*Install engine"):
        choose_runtime("auto", "gpu", tiny, read_card(tiny), 32)


def test_threads_follow_the_variables_then_the_cores(monkeypatch):
    monkeypatch.delenv("URBANMTL_THREADS", raising=False)
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert cpu_threads() == expected
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")                  # what a Dask worker gets
    assert cpu_threads() == 3
    monkeypatch.setenv("URBANMTL_THREADS", "5")
    assert cpu_threads() == 5
    monkeypatch.setenv("URBANMTL_THREADS", "many")
    assert cpu_threads() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)         # Windows, macOS
    monkeypatch.delenv("URBANMTL_THREADS")
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
    assert cpu_threads() == (os.cpu_count() or 1)


# --- the same maps, on the real demo scene with the bundled model ---


def _map(tmp_path: Path, tag: str, **options) -> tuple[Path, Path]:
    hse, lcz = tmp_path / f"{tag}_hse.tif", tmp_path / f"{tag}_lcz.tif"
    result = predict_scene(str(DEMO_SCENE), str(hse), str(lcz), options=PredictOptions(**options))
    assert options.get("runtime", "litert").lower().replace("auto", "litert") in result.runtime.lower()
    return hse, lcz


def test_both_runtimes_map_the_demo_city_the_same(tmp_path):
    lite = _map(tmp_path, "lite", runtime="litert")
    tf = _map(tmp_path, "tf", runtime="tensorflow")
    agreement = map_agreement(*lite, *tf)
    assert agreement.same, agreement.describe()
    assert agreement.cells > 1500


def test_both_runtimes_agree_on_an_odd_scene_size(tmp_path):
    with rasterio.open(DEMO_SCENE) as ds:
        left, top = ds.bounds.left + 10 * 37, ds.bounds.top - 10 * 23
        extent = (left, top - 10 * 417, left + 10 * 301, top)          # 301 x 417 px
    lite = _map(tmp_path, "lite", runtime="litert", extent=extent)
    tf = _map(tmp_path, "tf", runtime="tensorflow", extent=extent)
    with rasterio.open(lite[0]) as ds:
        assert (ds.width, ds.height) == (151, 209)
    agreement = map_agreement(*lite, *tf)
    assert agreement.same, agreement.describe()


def test_litert_maps_stay_the_same_across_tile_sizes(tmp_path):
    """512 px (one tile over the 386 x 506 px city, the fixed-shape file) against 384 px tiles (four, the dynamic
    file): the windowed attention keeps the maps alike; what differs lies along the seams, where a pixel's window
    is cut by the tile edge (measured: LCZ 99.65 % of cells, HSE 99th percentile 0.017)."""
    default = _map(tmp_path, "t512", runtime="litert")
    small = _map(tmp_path, "t384", runtime="litert", tile_size=384)
    agreement = map_agreement(*default, *small)
    assert agreement.lcz_share >= 0.99, agreement.describe()
    with rasterio.open(default[0]) as a, rasterio.open(small[0]) as b:
        difference = np.abs(a.read(1) - b.read(1))
    assert np.percentile(difference, 99) < 0.03 and difference.mean() < 0.003


def test_the_bundled_model_has_a_checked_litert_export():
    card = read_card(DEFAULT_MODEL_PATH)
    export = litert_export(DEFAULT_MODEL_PATH, card)
    assert export is not None and export.window == 32 and (1, 512, 512, 10) in export.fixed
    checked = card[LITERT_KEY]["checked"]
    assert checked["scenes"] >= 38 and checked["lowest_lcz_share"] >= 0.999
    assert checked["largest_hse_difference"] <= 0.001


# --- a mapping process on LiteRT never imports TensorFlow ---


def test_a_litert_run_never_imports_tensorflow(tmp_path):
    blocker = tmp_path / "blocker"
    for name in ("tensorflow", "keras"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} must not be imported by a LiteRT run')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)])}
    proc = subprocess.run([sys.executable, "-m", "core.predict", str(DEMO_SCENE), "--hse", str(tmp_path / "h.tif"),
                           "--lcz", str(tmp_path / "l.tif")], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LiteRT" in proc.stderr and "Traceback" not in proc.stderr
    worker_params = tmp_path / "params.json"
    worker_params.write_text(json.dumps({"input": str(DEMO_SCENE), "hse": str(tmp_path / "wh.tif"),
                                         "lcz": str(tmp_path / "wl.tif"), "options": {}}))
    proc = subprocess.run([sys.executable, "-m", "core.worker", str(worker_params)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ready = events[0]
    assert ready["event"] == "ready" and ready["runtime"] == "litert" and ready["threads"] >= 1
    assert events[-1]["event"] == "result" and "LiteRT" in events[-1]["runtime"]


def test_a_model_card_without_its_export_maps_on_tensorflow(tmp_path, tiny):
    for f in tiny.parent.iterdir():
        if f.suffix != ".tflite":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    result = predict_scene(str(DEMO_SCENE), str(tmp_path / "h.tif"), str(tmp_path / "l.tif"),
                           model_path=str(tmp_path / "model.keras"))
    assert "TensorFlow" in result.runtime
    assert any("no LiteRT export" in m for m in result.messages)
