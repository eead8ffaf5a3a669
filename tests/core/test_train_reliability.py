"""core.train on bad settings and failed starts: one clear sentence, nothing left that blocks the retry."""

from __future__ import annotations

import pytest

from core import train as train_module
from core.training.config import TrainConfig, check_value, make_config
from core.common.errors import UrbanMTLError
from tests.fakedata import make_authors_h5


@pytest.mark.parametrize("key,value,message", [
    ("epochs", "two", "epochs must be a whole number, got 'two'"),
    ("epochs", 2.5, "epochs must be a whole number"),
    ("learning_rate", "fast", "learning_rate must be a number"),
    ("augment", "yes", "augment must be true or false"),
    ("val_scenes", [{"a": 1}], "val_scenes must be a list"),
    ("seed", "x", "seed must be a whole number"),
])
def test_config_values_are_type_checked(key, value, message):
    with pytest.raises(UrbanMTLError, match=message):
        make_config({key: value}, {})


def test_good_values_pass():
    assert check_value("learning_rate", 1) == 1.0 and check_value("seed", None) is None
    assert make_config({"val_scenes": "rio"}, {}).val_scenes == ["rio"]
    assert isinstance(make_config({}, {"epochs": 3}), TrainConfig)


def test_config_file_with_a_bad_type_exits_2(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: two\n")
    assert train_module.main(["--config", str(config), "--data", "x.h5", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "error: epochs must be a whole number, got 'two'."


def test_a_failed_start_leaves_nothing_that_blocks_the_retry(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_module.main(["--data", str(tmp_path / "missing.h5"), "--out", str(run), "--epochs", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not run.exists()
    data = str(make_authors_h5(tmp_path / "train.h5", n=8, size=32, seed=0))
    # A folder that existed before keeps its own files; the run's files are removed again.
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert train_module.main(["--data", data, "--variant", "nope", "--out", str(run), "--epochs", "1"]) == 2
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    assert train_module.main(["--data", data, "--out", str(run), "--epochs", "1", "--batch-size", "4",
                              "--patch-size", "32", "--base-width", "4", "--val-fraction", "0.25"]) == 0
    assert (run / "model.keras").exists()
