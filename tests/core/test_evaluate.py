"""core.evaluate end to end: a tiny saved model scored on tiny HDF5 files written here, through the CLI's main()."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from core.evaluate import main  # noqa: E402
from core.evaluation.patches import default_confusion_png, evaluate  # noqa: E402
from core.evaluation.scene_labels import SceneLabelTally  # noqa: E402
from core.evaluation.metrics import confusion_matrix, hse_metrics  # noqa: E402
from core.network.inference import predict_batch  # noqa: E402
from core.network.model import ModelConfig, build_networks
from core.network.saving import base_card, save_model

SHARED_EUROSAT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "eurosat" / "eurosat_s2_teacher.h5"
N, SIZE = 4, 32


def _save_tiny(folder: Path, variant: str) -> tuple[Path, object]:
    config = ModelConfig(variant=variant, base_width=4)
    network = build_networks(config)[1]
    save_model(network, folder / "model.keras", base_card(config, network))
    return folder, network


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, object]:
    """A training-run-like folder holding a tiny multitask model.keras and its card."""
    return _save_tiny(tmp_path_factory.mktemp("run"), "mtl_learned_p2f")


def _image(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 0.4, size=(N, SIZE, SIZE, 10)).astype(np.float32)


@pytest.fixture(scope="module")
def authors_h5(tmp_path_factory) -> Path:
    """Authors' layout: x reflectance (N,32,32,10), y_0 HSE percent (N,16,16,1), y_1 one-hot LCZ (N,32,32,17)."""
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("authors") / "patches.h5"
    codes = rng.choice([2, 6, 11, 14, 17], size=(N, SIZE, SIZE))
    with h5py.File(path, "w") as f:
        f["x"] = _image(rng)
        f["y_0"] = rng.uniform(0.0, 100.0, size=(N, SIZE // 2, SIZE // 2, 1)).astype(np.float32)
        f["y_1"] = np.eye(17, dtype=np.float32)[codes - 1]
    return path


@pytest.fixture(scope="module")
def so2sat_h5(tmp_path_factory) -> Path:
    """So2Sat LCZ42 layout: sen2 (N,32,32,10) reflectance and one one-hot label per patch, no HSE."""
    rng = np.random.default_rng(4)
    path = tmp_path_factory.mktemp("so2sat") / "testing.h5"
    with h5py.File(path, "w") as f:
        f["sen2"] = _image(rng)
        f["label"] = np.eye(17, dtype=np.float32)[[1, 5, 13, 16]]
    return path


def test_cli_writes_all_metrics_equal_to_direct_computation(run_dir, authors_h5, tmp_path, capsys):
    folder, network = run_dir
    out = tmp_path / "eval" / "metrics.json"
    assert main(["--model", str(folder), "--data", str(authors_h5), "--out", str(out),
                 "--batch-size", "3", "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert {"hse", "lcz", "model", "data", "n_batches"} <= set(result)
    assert result["n_batches"] == 2                       # 4 patches in batches of 3
    assert Path(result["model"]) == folder / "model.keras"
    assert len(result["data"]) == 1 and result["data"][0]["spec"] == str(authors_h5)
    assert {"mae_pp", "kappa", "aa", "recall", "f1"} <= set(result["hse"])
    assert {"oa", "kappa", "aa", "wa", "oa_urb", "oa_bu", "f1_per_class", "confusion_matrix"} <= set(result["lcz"])
    assert 0.0 <= result["hse"]["mae_pp"] <= 100.0
    for key in ("oa", "aa", "wa", "oa_urb", "oa_bu"):
        assert 0.0 <= result["lcz"][key] <= 1.0
    assert result["hse"]["n"] == N * (SIZE // 2) ** 2
    assert result["lcz"]["n"] == N * SIZE * SIZE

    # The same numbers computed directly from the file and the network: the streaming must not change them.
    with h5py.File(authors_h5) as f:
        x, hse_percent, onehot = f["x"][:], f["y_0"][:], f["y_1"][:]
    pred = predict_batch(network, x)
    direct_hse = hse_metrics(hse_percent[..., 0] / 100.0, pred["hse"])
    assert result["hse"]["mae_pp"] == pytest.approx(direct_hse["mae_pp"], rel=1e-4)
    assert result["hse"]["counts"] == direct_hse["counts"]
    predicted = np.repeat(np.repeat(pred["lcz"].argmax(-1) + 1, 2, axis=1), 2, axis=2)
    assert result["lcz"]["confusion_matrix"] == confusion_matrix(onehot.argmax(-1) + 1, predicted).tolist()

    png = default_confusion_png(out)
    assert png.name == "metrics_confusion.png" and png.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "LCZ  OA" in printed and "HSE  MAE" in printed


def test_lcz_only_dataset_has_no_hse_key(run_dir, so2sat_h5, tmp_path):
    out = tmp_path / "so2sat.json"
    png = tmp_path / "figures" / "cm.png"
    assert main(["--model", str(run_dir[0] / "model.keras"), "--data", str(so2sat_h5), "--out", str(out),
                 "--confusion-png", str(png), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert "hse" not in result and "lcz" in result
    assert result["lcz"]["n"] == N * SIZE * SIZE          # the patch label covers every pixel
    assert png.exists() and not default_confusion_png(out).exists()


def test_two_datasets_merge_and_report_each(run_dir, authors_h5, so2sat_h5):
    result = evaluate(run_dir[0], [str(authors_h5), str(so2sat_h5)], batch_size=4, progress=False)
    per = [entry["metrics"] for entry in result["data"]]
    assert set(per[0]) == {"hse", "lcz"} and set(per[1]) == {"lcz"}
    assert result["lcz"]["n"] == per[0]["lcz"]["n"] + per[1]["lcz"]["n"]
    summed = np.array(per[0]["lcz"]["confusion_matrix"]) + np.array(per[1]["lcz"]["confusion_matrix"])
    assert result["lcz"]["confusion_matrix"] == summed.tolist()
    assert result["hse"] == per[0]["hse"]
    assert result["n_batches"] == 2


def test_missing_model_exits_2_with_message(authors_h5, tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    assert main(["--model", str(missing), "--data", str(authors_h5), "--out", str(tmp_path / "m.json"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and "no_such_run" in err
    assert "Traceback" not in err
    assert not (tmp_path / "m.json").exists()


def test_model_without_the_data_task_exits_2(so2sat_h5, tmp_path, capsys):
    folder, _ = _save_tiny(tmp_path / "hse_run", "hse")
    assert main(["--model", str(folder), "--data", str(so2sat_h5), "--out", str(tmp_path / "m.json"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "predicts HSE" in err and "LCZ" in err


@pytest.mark.parametrize("flags, message", [
    (["--patch-size", "30"], "multiple of 8"),
    (["--batch-size", "0"], "batch size"),
    (["--hse-threshold", "1.5"], "threshold"),
])
def test_bad_arguments_exit_2(run_dir, authors_h5, tmp_path, capsys, flags, message):
    assert main(["--model", str(run_dir[0]), "--data", str(authors_h5), "--out", str(tmp_path / "m.json"),
                 "--no-progress", *flags]) == 2
    assert message in capsys.readouterr().err


def test_missing_data_exits_2(run_dir, tmp_path, capsys):
    assert main(["--model", str(run_dir[0]), "--data", str(tmp_path / "absent.h5"), "--out",
                 str(tmp_path / "m.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "absent.h5" in err


def test_scene_label_tally_by_hand():
    # Two 'Residential' patches and one 'Forest' patch, predictions on a 2 x 2 grid.
    lcz = np.zeros((3, 2, 2, 17))
    lcz[0, ..., 5] = 1.0                      # all 6: built
    lcz[1, ..., 13] = 1.0                     # D ...
    lcz[1, 0, :, 13], lcz[1, 0, :, 1] = 0.0, 1.0   # ... half 2: not a majority -> not built
    lcz[2, ..., 10] = 1.0                     # all A
    hse = np.array([0.8, 0.4, 0.0]).reshape(3, 1, 1) * np.ones((3, 2, 2))
    ref = np.zeros((3, 4, 4, 17))
    ref[:2, ..., 1] = 1.0                     # references say 2 for both residential patches
    ref[2, ..., 10] = 1.0
    tally = SceneLabelTally()
    tally.add(["Residential", "Residential", "Forest"], {"lcz": ref}, {"lcz": lcz, "hse": hse})
    result = tally.result()
    assert list(result) == ["Forest", "Residential"]
    assert result["Residential"] == {"n": 2, "share_built": 0.5, "mean_hse": pytest.approx(0.6),
                                     "reference_share_built": 1.0}
    assert result["Forest"] == {"n": 1, "share_built": 0.0, "mean_hse": 0.0, "reference_share_built": 0.0}


def test_shared_eurosat_scene_labels(run_dir, tmp_path):
    if not SHARED_EUROSAT.exists():
        pytest.skip("the shared EuroSAT file ../shared/data/eurosat/eurosat_s2_teacher.h5 is absent")
    from core.data import open_datasets

    if not hasattr(open_datasets(str(SHARED_EUROSAT))[0], "patch_labels"):
        pytest.skip("core.data's EuroSAT dataset does not offer patch_labels() yet")
    result = evaluate(run_dir[0], [str(SHARED_EUROSAT)], batch_size=32, progress=False,
                      out=tmp_path / "eurosat.json")
    scenes = result["scene_labels"]
    assert sum(entry["n"] for entry in scenes.values()) == 181
    assert {"Residential", "Industrial", "Forest", "SeaLake"} <= set(scenes)
    for entry in scenes.values():
        assert 0.0 <= entry["share_built"] <= 1.0 and 0.0 <= entry["mean_hse"] <= 1.0
    # The teacher labels themselves: every Residential/Industrial patch built, every Forest/SeaLake one not.
    assert scenes["Residential"]["reference_share_built"] == 1.0 and scenes["Forest"]["reference_share_built"] == 0.0
    assert scenes["SeaLake"]["reference_mean_hse"] < 0.05 < scenes["Industrial"]["reference_mean_hse"]
    assert json.loads((tmp_path / "eurosat.json").read_text())["scene_labels"] == scenes


def test_subsets_are_the_training_split_and_default_to_the_card(tmp_path, authors_h5, capsys):
    folder, network = _save_tiny(tmp_path / "run", "mtl_learned_p2f")
    out = tmp_path / "m.json"
    # A card without training settings: the split must be given.
    assert main(["--model", str(folder), "--data", str(authors_h5), "--out", str(out), "--subset", "val",
                 "--no-progress"]) == 2
    assert "--val-fraction" in capsys.readouterr().err
    card_file = folder / "model_card.json"
    card = json.loads(card_file.read_text())
    card["training"] = {"config": {"val_fraction": 0.25, "split_seed": 7}}
    card_file.write_text(json.dumps(card))
    counts = {}
    for subset in ("all", "train", "val"):
        result = evaluate(folder, [str(authors_h5)], subset=subset, progress=False)
        counts[subset] = result["hse"]["n"] // (SIZE // 2) ** 2
        if subset != "all":
            assert result["data"][0]["split"] == {"by": "patch", "val_fraction": 0.25, "seed": 7}
    assert counts == {"all": N, "train": N - 1, "val": 1}
    # Flags override the card.
    assert evaluate(folder, [str(authors_h5)], subset="val", val_fraction=0.5, progress=False)["hse"]["n"] \
        == 2 * (SIZE // 2) ** 2


def test_scene_subset_uses_the_training_patch_size_and_refuses_another(tmp_path, capsys):
    from tests import fakedata

    folder, _ = _save_tiny(tmp_path / "run", "mtl_learned_p2f")
    card_file = folder / "model_card.json"
    card = json.loads(card_file.read_text())
    card["training"] = {"config": {"val_fraction": 0.25, "split_seed": 0, "patch_size": 16}}
    card_file.write_text(json.dumps(card))
    scene = fakedata.make_scene(tmp_path / "scene", size=96)
    # No patch size given: the card's 16 px, so the scene is cut into the training blocks of 32 px.
    val = evaluate(folder, [str(scene)], subset="val", progress=False)
    train = evaluate(folder, [str(scene)], subset="train", progress=False)
    assert val["data"][0]["split"]["block_size"] == 32 == train["data"][0]["split"]["block_size"]
    whole = evaluate(folder, [str(scene)], subset="all", patch_size=16, progress=False)
    assert val["hse"]["n"] + train["hse"]["n"] == whole["hse"]["n"]
    # The same size given explicitly is fine; another would mix training and validation areas.
    assert evaluate(folder, [str(scene)], subset="val", patch_size=16, progress=False)["hse"] == val["hse"]
    assert main(["--model", str(folder), "--data", str(scene), "--out", str(tmp_path / "m.json"),
                 "--subset", "val", "--patch-size", "32", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "training patch size (16 px" in err and "give 16" in err
    assert not (tmp_path / "m.json").exists()
