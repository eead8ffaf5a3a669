"""python -m core.train: learns a planted signal, resumes exactly, writes the run folder, rejects bad config."""

import csv
import json

import numpy as np
import pytest

from core import train as train_module
from core.training import run as training_run
from core.training.run import build_trainer
from core.training.config import TrainConfig
from core.network.saving import load_model
from tests.fakedata import make_authors_h5, make_so2sat_h5

SMALL = ["--batch-size", "8", "--patch-size", "32", "--base-width", "8", "--seed", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_data")
    return {
        "train": str(make_authors_h5(d / "train.h5", n=48, size=32, seed=0)),
        "val": str(make_authors_h5(d / "val.h5", n=16, size=32, seed=1)),
        "so2sat": str(make_so2sat_h5(d / "so2sat.h5", n=16)),
    }


def _log(run):
    with open(run / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_training_learns_the_planted_signal(data, tmp_path):
    run = tmp_path / "run"
    code = train_module.main(["--data", data["train"], "--val-data", data["val"], "--epochs", "30",
                              "--out", str(run), *SMALL])
    assert code == 0
    card = json.loads((run / "model_card.json").read_text())
    rows = _log(run)
    assert len(rows) == card["epochs_run"] == 30
    assert float(rows[-1]["loss"]) < 0.5 * float(rows[0]["loss"])
    # Held-out patches of the planted rule (tests/fakedata.py): bright squares are LCZ 2 with HSE 100 %.
    assert card["metrics"]["hse"]["mae_pp"] < 10
    assert card["metrics"]["lcz"]["oa"] > 0.85
    assert card["variant"] == "mtl_learned_p2f" and card["bands"][7] == "B8A" and card["parameters"] > 0
    assert {"s_hse", "s_lcz", "w_hse", "w_lcz", "hse_loss", "lcz_loss", "val_loss"} <= set(rows[0])
    for name in ("model.keras", "best.weights.h5", "last.weights.h5", "loss_curve.png", "config.json"):
        assert (run / name).exists(), name
    assert any((run / "tensorboard").rglob("*tfevents*"))
    assert load_model(run).has_hse


@pytest.mark.parametrize("ema", ["0", "0.9"])
def test_resume_after_a_kill_mid_epoch_continues_at_the_right_epoch(data, tmp_path, monkeypatch, ema):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # With --ema the validation scores the averaged weights, so it matches only if the average is restored too.
    args = ["--data", data["train"], "--val-data", data["val"], "--ema", ema, *SMALL]
    assert train_module.main([*args, "--epochs", "3", "--out", str(straight)]) == 0

    real = training_run.batches

    def dies_in_epoch_three(datasets, cfg, start_epoch, training):
        for i, batch in enumerate(real(datasets, cfg, start_epoch, training)):
            if training and i == 2 * 6 + 3:  # 6 steps per epoch: the 4th batch of the third epoch
                raise KeyboardInterrupt("simulated kill")
            yield batch

    monkeypatch.setattr(training_run, "batches", dies_in_epoch_three)
    # Raised inside the tf.data generator, the stop reaches the command as the pipeline's error: a failed run (1).
    assert train_module.main([*args, "--epochs", "3", "--out", str(killed)]) != 0
    assert json.loads((killed / "state.json").read_text())["epochs_done"] == 2
    assert not (killed / "model.keras").exists()
    monkeypatch.setattr(training_run, "batches", real)
    assert train_module.main(["--out", str(killed), "--resume"]) == 0

    rows = _log(killed)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    # Same seed, same batches per epoch, optimizer state restored: the resumed run matches the straight one.
    for key in ("loss", "val_loss", "s_hse"):
        np.testing.assert_allclose(float(rows[-1][key]), float(_log(straight)[-1][key]), rtol=1e-5)
    assert json.loads((killed / "model_card.json").read_text())["epochs_run"] == 3


def test_ema_validates_and_keeps_the_averaged_weights(data, tmp_path):
    from core.network.model import ModelConfig

    run = tmp_path / "ema"
    assert train_module.main(["--data", data["train"], "--val-data", data["val"], "--epochs", "1", "--ema", "0.8",
                              "--out", str(run), *SMALL]) == 0
    card = json.loads((run / "model_card.json").read_text())
    assert card["training"]["config"]["ema"] == 0.8
    trainer, live = build_trainer(ModelConfig(base_width=8), 0.002, 0.8)
    trainer.load_weights(run / "last.weights.h5")
    kept = load_model(run).network
    trained = {w.path: np.asarray(w) for w in live.trainable_weights}
    averaged = {w.path: np.asarray(w) for w in kept.trainable_weights}
    assert trained.keys() == averaged.keys()
    # One epoch, so the best checkpoint is the last epoch's: the model is its average, not the last weights.
    assert not all(np.allclose(trained[k], averaged[k]) for k in trained)
    # The logged validation loss is the one of the kept (averaged) weights.
    trainer.load_weights(run / "best.weights.h5")
    from core.data import open_datasets, iterate_batches

    val = open_datasets(data["val"], patch_size=32)
    losses = [float(trainer.test_step(b)["loss"]) for b in iterate_batches(val, 8, training=False)]
    np.testing.assert_allclose(np.mean(losses), float(_log(run)[0]["val_loss"]), rtol=1e-4)


def test_bad_ema_is_refused(data, tmp_path, capsys):
    assert train_module.main(["--data", data["train"], "--ema", "1", "--out", str(tmp_path / "r"), *SMALL]) == 2
    assert "--ema must be at least 0 (off) and below 1" in capsys.readouterr().err


def test_a_label_margin_trains_on_the_window_centre_and_maps_with_overlapping_tiles(data, tmp_path):
    from core.data import iterate_batches, open_datasets
    from core.network.model import ModelConfig
    from core.tiling.layout import WINDOWED_OVERLAP, WINDOWED_TILE_SIZE, model_tiling

    run = tmp_path / "margin"
    assert train_module.main(["--data", data["train"], "--val-data", data["val"], "--epochs", "1",
                              "--label-margin", "8", "--out", str(run), *SMALL]) == 0
    card = json.loads((run / "model_card.json").read_text())
    assert card["training"]["config"]["label_margin"] == 8
    assert model_tiling(card, windowed=False) == (32, 16)          # tiles overlap by twice the margin
    assert model_tiling(card) == (WINDOWED_TILE_SIZE, max(WINDOWED_OVERLAP, 16))
    # The trainer's losses ignore the references of the margin and only those.
    trainer, _ = build_trainer(ModelConfig(base_width=8), 0.002, label_margin=8)
    trainer.load_weights(run / "best.weights.h5")
    x, y = next(iter(iterate_batches(open_datasets(data["val"], patch_size=32), 8, training=False)))
    edge = {"hse": y["hse"].copy(), "lcz": y["lcz"].copy()}
    edge["hse"][:, :4] = np.nan                     # 4 pixels of 20 m = the 8 px margin
    edge["lcz"][:, -8:] = 0.0
    centre = {"hse": y["hse"].copy(), "lcz": y["lcz"].copy()}
    centre["hse"][:, 4:12, 4:12] = 1.0 - centre["hse"][:, 4:12, 4:12]
    # P2F feeds the HSE reference in as a guide: keep the guide, change only what the loss compares with.
    loss = lambda ref: {k: float(v) for k, v in trainer._task_losses(ref, trainer(trainer._inputs(x, y)))[1].items()}
    base = loss(y)
    np.testing.assert_allclose(list(loss(edge).values()), list(base.values()), rtol=1e-6)
    assert loss(centre)["hse"] != pytest.approx(base["hse"])


@pytest.mark.parametrize("margin, message", [
    ("7", "--label-margin must be an even number"),
    ("-2", "--label-margin must be an even number"),
    ("16", "leaves nothing of a 32 px window"),
])
def test_bad_label_margin_is_refused(data, tmp_path, capsys, margin, message):
    assert train_module.main(["--data", data["train"], "--label-margin", margin,
                              "--out", str(tmp_path / "r"), *SMALL]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_label_margin_too_wide_for_a_patch_dataset_is_refused(data, tmp_path, capsys):
    # So2Sat patches are 32 px whatever --patch-size says: a 16 px margin would leave none of them.
    assert train_module.main(["--data", data["train"], f"so2sat:{data['so2sat']}", "--val-fraction", "0.25",
                              "--epochs", "1", "--out", str(tmp_path / "r"), *SMALL[:2], "--patch-size", "64",
                              "--base-width", "8", "--label-margin", "16"]) == 2
    assert "leaves nothing of the 32 px patches" in capsys.readouterr().err


def test_mixed_formats_and_lcz_only_data(data, tmp_path):
    run = tmp_path / "mixed"
    assert train_module.main(["--data", data["train"], f"so2sat:{data['so2sat']}", "--val-fraction", "0.25",
                              "--epochs", "1", "--out", str(run), *SMALL]) == 0
    card = json.loads((run / "model_card.json").read_text())
    assert [d["format"] for d in card["training"]["data"]] == ["authors", "so2sat"]
    # The validation split has its own seed: runs of other --seed values validate on the same patches.
    assert {d["split"]["seed"] for d in card["training"]["validation_data"]} == {0}
    lcz_only = tmp_path / "lcz_only"
    assert train_module.main(["--data", data["so2sat"], "--variant", "lcz", "--val-fraction", "0.25",
                              "--epochs", "1", "--out", str(lcz_only), *SMALL]) == 0
    assert "hse" not in json.loads((lcz_only / "model_card.json").read_text())["metrics"]


def test_config_file_and_flags(data, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("epochs: 1\nbatch_size: 4\nlearning-rate: 0.001\nvariant: mtl_equal\n")
    run = tmp_path / "run"
    assert train_module.main(["--config", str(cfg), "--data", data["train"], "--val-data", data["val"],
                              "--batch-size", "8", "--patch-size", "32", "--base-width", "4",
                              "--out", str(run)]) == 0
    used = json.loads((run / "config.json").read_text())
    assert used["batch_size"] == 8 and used["learning_rate"] == 0.001 and used["variant"] == "mtl_equal"
    assert used["epochs"] == 1

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epoch": 3}))
    assert train_module.main(["--config", str(bad), "--data", data["train"], "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s): epoch" in err and "epochs" in err
    # An existing run is never overwritten.
    assert train_module.main(["--data", data["train"], "--out", str(run), *SMALL]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert train_module.main(["--data", data["so2sat"], "--variant", "hse", "--out", str(tmp_path / "y")]) == 2
    assert "none of the training data has a HSE reference" in capsys.readouterr().err
    assert train_module.main(["--out", str(tmp_path / "nothing"), "--resume"]) == 2


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert (cfg.learning_rate, cfg.batch_size, cfg.lr_decay, cfg.lr_decay_every, cfg.patience, cfg.epochs,
            cfg.patch_size, cfg.variant) == (0.002, 8, 0.75, 2, 10, 100, 128, "mtl_learned_p2f")


def test_help_runs(capsys):
    with pytest.raises(SystemExit) as exc:
        train_module.main(["--help"])
    assert exc.value.code == 0 and "--resume" in capsys.readouterr().out
