"""Fine-tuning (core.train --init-from) and training windows drawn around LCZ training-area polygons."""

from __future__ import annotations

import json

import numpy as np

from core import train as train_module
from core.data import open_datasets
from core.network.saving import load_model
from tests import fakedata
from tests.fakedata import make_authors_h5

SMALL = ["--batch-size", "8", "--patch-size", "32", "--seed", "1"]


def test_init_from_starts_with_the_models_weights_and_takes_its_architecture(tmp_path):
    data = str(make_authors_h5(tmp_path / "train.h5", n=16, size=32, seed=0))
    base = tmp_path / "base"
    assert train_module.main(["--data", data, "--epochs", "1", "--base-width", "4", "--out", str(base),
                              "--val-fraction", "0.25", *SMALL]) == 0
    # A fine-tuning run with lr 0 keeps the start weights exactly; its base width comes from the start card
    # even though the flags say otherwise.
    tuned = tmp_path / "tuned"
    assert train_module.main(["--data", data, "--epochs", "1", "--base-width", "16", "--learning-rate", "0",
                              "--init-from", str(base), "--out", str(tuned), "--val-fraction", "0.25",
                              *SMALL]) == 0
    card = json.loads((tuned / "model_card.json").read_text())
    assert card["config"]["base_width"] == 4 and card["training"]["config"]["init_from"] == str(base)
    start, after = load_model(base).network, load_model(tuned).network
    # BatchNorm moving statistics move even at lr 0; every trainable weight is the start model's.
    assert len(start.trainable_weights) == len(after.trainable_weights) > 0
    for x, y in zip(start.trainable_weights, after.trainable_weights):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_init_from_a_missing_model_is_one_clear_error(tmp_path, capsys):
    data = str(make_authors_h5(tmp_path / "train.h5", n=8, size=32, seed=0))
    code = train_module.main(["--data", data, "--epochs", "1", "--init-from", str(tmp_path / "nothere"),
                              "--out", str(tmp_path / "run"), *SMALL])
    assert code == 2
    assert "error:" in capsys.readouterr().err


def test_polygon_scenes_draw_windows_around_the_polygons(tmp_path):
    manifest = fakedata.make_scene(tmp_path, size=160, lcz="polygons", hse=False)
    [scene] = open_datasets(manifest, patch_size=32)
    centres = scene._polygon_centres()
    assert centres is not None and len(centres) == len(scene._lcz_polygons.shapes)
    assert len(scene) == min(len(centres) * 8, int(np.ceil(scene.area_px() / 32 ** 2)))
    rng = np.random.default_rng(0)
    windows = scene._plan(True, rng)
    image, hse, lcz = scene.read_units(windows, True, rng)
    # Every window holds some polygon pixels (drawn around them, not at random over the scene).
    assert np.all(lcz.sum(axis=-1).reshape(len(windows), -1).max(axis=1) > 0)
    assert all(r % 2 == 0 and c % 2 == 0 for r, c in windows)
