"""The readers on the real shared data (../shared/data): EuroSAT band order, label scaling, class names, scene."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from core.data import EuroSATDataset, SceneDataset, iterate_batches, open_datasets, steps_per_epoch

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
EUROSAT = SHARED / "eurosat" / "eurosat_s2_teacher.h5"
SCENE = SHARED / "scene"

pytestmark = pytest.mark.skipif(not EUROSAT.exists() or not (SCENE / "T33UUU_20170216_L1C_13band.tif").exists(),
                                reason="shared data (../shared/data) is not available")


@pytest.fixture(scope="module")
def shared():
    eurosat, scene = open_datasets(str(SHARED), patch_size=128)
    return eurosat, scene


def test_shared_folder_gives_eurosat_and_scene(shared):
    eurosat, scene = shared
    assert isinstance(eurosat, EuroSATDataset) and isinstance(scene, SceneDataset)
    assert (len(eurosat), eurosat.patch_size, eurosat.tasks()) == (181, 64, ["hse", "lcz"])
    assert (scene.height, scene.width, len(scene), scene.tasks()) == (768, 1536, 72, ["hse", "lcz"])
    for ds in shared:
        json.dumps(ds.describe())
    # The scene folder alone, the EuroSAT file alone (by content), and the forced format.
    [alone] = open_datasets(str(SCENE), patch_size=64)
    assert isinstance(alone, SceneDataset) and alone.patch_size == 64
    assert isinstance(open_datasets(str(EUROSAT))[0], EuroSATDataset)
    assert [type(d) for d in open_datasets(f"shared:{SHARED}")] == [EuroSATDataset, SceneDataset]


def test_eurosat_band_order_and_label_scaling(shared):
    eurosat, _ = shared
    picks = [0, 40, 180, 7]
    image, hse, lcz = eurosat.read_units(picks)
    with h5py.File(EUROSAT) as f:
        x = np.stack([f["x"][i] for i in picks])
        raw_lcz = np.stack([f["lcz_prob"][i] for i in picks]).astype(np.float64)
        raw_hse = np.stack([f["hse"][i] for i in picks]).astype(np.float64) / 255.0
    # B8A is the LAST band of a EuroSAT file; model order takes file bands 1..7, 12, 10, 11.
    np.testing.assert_allclose(image, x[..., [1, 2, 3, 4, 5, 6, 7, 12, 10, 11]] / 10000.0, rtol=1e-6)
    assert not np.allclose(image[..., 7], x[..., 8] / 10000.0)  # not B9 (water vapour)
    expected = raw_lcz / raw_lcz.sum(-1, keepdims=True)
    np.testing.assert_allclose(lcz, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lcz.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(hse[..., 0], raw_hse.reshape(4, 32, 2, 32, 2).mean(axis=(2, 4)), rtol=1e-5)


def test_eurosat_class_names_and_channel_meaning(shared):
    eurosat, _ = shared
    labels = eurosat.patch_labels()
    with h5py.File(EUROSAT) as f:
        classes = f["eurosat_class"][:]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["eurosat_class"].attrs["class_names"]]
    assert len(labels) == 181 and labels == [names[c] for c in classes]
    assert set(labels) == {"AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                           "PermanentCrop", "Residential", "River", "SeaLake"}
    # Channel k-1 is LCZ k: the teacher calls Forest patches A (11) and SeaLake patches G (17).
    forest = [i for i, name in enumerate(labels) if name == "Forest"][:4]
    sea = [i for i, name in enumerate(labels) if name == "SeaLake"][:4]
    for picks, code in ((forest, 11), (sea, 17)):
        _, _, lcz = eurosat.read_units(picks)
        assert np.all(lcz.mean(axis=(1, 2)).argmax(-1) + 1 == code)


def test_shared_scene_window_matches_the_files(shared):
    _, scene = shared
    row, col = 256, 512
    image, hse, lcz = scene.read_units([(row, col)])
    with rasterio.open(SCENE / "T33UUU_20170216_L1C_13band.tif") as src:
        raw = src.read(window=Window(col, row, 128, 128)).astype(np.float64)
    # L1C order: B8A is file band 9 (index 8), right after B8.
    np.testing.assert_allclose(image[0], raw[[1, 2, 3, 4, 5, 6, 7, 8, 11, 12]].transpose(1, 2, 0) / 10000.0,
                               rtol=1e-6)
    with rasterio.open(SCENE / "T33UUU_20170216_hse_teacher.tif") as src:
        raw_hse = src.read(1, window=Window(col // 2, row // 2, 64, 64)).astype(np.float64)
    # Same 20 m grid: averaging is the identity, value / 254.
    np.testing.assert_allclose(hse[0, ..., 0], raw_hse / 254.0, rtol=1e-5, atol=1e-6)
    with rasterio.open(SCENE / "T33UUU_20170216_lcz_teacher_20m.tif") as src:
        raw_lcz = src.read(window=Window(col // 2, row // 2, 64, 64)).transpose(1, 2, 0).astype(np.float64)
    np.testing.assert_allclose(lcz[0].sum(-1), 1.0, rtol=1e-5)
    # Bilinear to 10 m: each 2x2 block keeps the class of its 20 m teacher pixel almost everywhere.
    teacher = np.repeat(np.repeat(raw_lcz.argmax(-1), 2, 0), 2, 1)
    assert (lcz[0].argmax(-1) == teacher).mean() > 0.9


def test_shared_scene_batches_and_split(shared):
    _, scene = shared
    train, val = scene.split(0.2, seed=0)
    assert len(train.blocks) + len(val.blocks) == 18 and len(val.blocks) == 4
    batches = list(iterate_batches([train], 8, training=True, seed=0, epoch=0))
    assert len(batches) == steps_per_epoch([train], 8, training=True) == 7
    x, y = batches[0]
    assert x["image"].shape == (8, 128, 128, 10) and y["hse"].shape == (8, 64, 64, 1)
    assert np.isfinite(y["hse"]).all() and 0.0 <= float(y["hse"].min()) and float(y["hse"].max()) <= 1.0
