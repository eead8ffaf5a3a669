"""Training across many scenes: a folder of manifests, whole scenes held out for validation, batches mixing
every dataset, the aligned-grid fast path of reference windows, and maps scored per 100 m cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from core.training.config import TrainConfig, load_config_file, make_config
from core.data import iterate_batches, open_datasets, steps_per_epoch
from core.data.reference_rasters import RasterReference
from core.data.formats import detect_format
from core.common.errors import UrbanMTLError
from core.training.run import split_datasets
from tests import fakedata

REPO = Path(__file__).resolve().parents[2]
CITIES = REPO.parent / "shared" / "data" / "cities"


@pytest.fixture
def folder(tmp_path) -> Path:
    """Three fake 'cities' in one folder of manifests, plus a file that is not a manifest."""
    for i, name in enumerate(["alpha_20170101", "beta_20170202", "gamma_20170303"]):
        fakedata.make_scene(tmp_path / "cities", size=64 + 16 * i, name=name, lcz="probabilities",
                            origin=(330000 + 2000 * i, 5822040))
    (tmp_path / "cities" / "cities.json").write_text(json.dumps([{"name": "alpha"}]))
    return tmp_path / "cities"


def test_a_folder_of_manifests_opens_one_dataset_per_scene(folder):
    assert detect_format(folder) == "scenes"
    datasets = open_datasets(folder, patch_size=32)
    assert [d.name for d in datasets] == ["alpha_20170101", "beta_20170202", "gamma_20170303"]
    assert all(d.group == "cities" for d in datasets)
    assert [d.name for d in open_datasets(f"scenes:{folder}", patch_size=32)] == [d.name for d in datasets]


def test_an_empty_folder_says_what_it_needs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UrbanMTLError, match="no scene manifest"):
        open_datasets(f"scenes:{tmp_path / 'empty'}", patch_size=32)


def test_val_scenes_hold_whole_scenes_out_and_keep_the_rest_whole(folder, tmp_path):
    eurosat = fakedata.make_eurosat_h5(tmp_path / "eurosat.h5", n=10)
    datasets = open_datasets(eurosat, patch_size=64) + open_datasets(folder, patch_size=32)
    cfg = TrainConfig(val_scenes=["beta"], val_fraction=0.2)
    train, val = split_datasets(datasets, cfg)
    names_train = [(d.name, getattr(d, "subset", None)) for d in train]
    names_val = [(d.name, getattr(d, "subset", None)) for d in val]
    # beta goes whole to validation; alpha and gamma train on all their area (no split by block);
    # the patch file is still split by patch.
    assert ("beta_20170202", None) in names_val
    assert ("alpha_20170101", None) in names_train and ("gamma_20170303", None) in names_train
    assert not any(n.startswith(("alpha", "gamma")) for n, _ in names_val)
    assert sum(len(d) for d in train if d.format == "eurosat") == 8
    with pytest.raises(UrbanMTLError, match="val_scenes names delta"):
        split_datasets(datasets, TrainConfig(val_scenes=["delta"]))


def test_val_scenes_from_a_config_file(tmp_path, folder):
    config = tmp_path / "c.yaml"
    config.write_text(f"data: [{folder}]\nval_scenes: [alpha, gamma]\nmix_batches: false\n")
    cfg = make_config(load_config_file(config), {})
    assert cfg.val_scenes == ["alpha", "gamma"] and cfg.mix_batches is False


def test_mixed_batches_draw_from_every_dataset_in_proportion_to_area(folder):
    datasets = open_datasets(folder, patch_size=32)
    sizes = np.array([len(d) for d in datasets], dtype=float)
    steps = steps_per_epoch(datasets, 4, training=True, mix=True)
    assert steps == int(np.ceil(sizes.sum() / 4))
    batches = list(iterate_batches(datasets, 4, training=True, seed=1, epoch=0, mix=True))
    assert len(batches) == steps
    assert sum(x["image"].shape[0] for x, _ in batches) == sizes.sum()
    # Unmixed, every dataset ends with its own partial batch: more batches for the same samples.
    unmixed = list(iterate_batches(datasets, 4, training=True, seed=1, epoch=0))
    assert len(unmixed) == sum(int(np.ceil(n / 4)) for n in sizes) >= steps
    again = list(iterate_batches(datasets, 4, training=True, seed=1, epoch=0, mix=True))
    for (x1, y1), (x2, y2) in zip(batches, again):
        np.testing.assert_array_equal(x1["image"], x2["image"])
        np.testing.assert_array_equal(y1["lcz"], y2["lcz"])


def test_mixed_batches_hold_samples_of_several_scenes(tmp_path):
    """Two scenes with different constant images: mixed batches contain both, in proportion to area."""
    folder = tmp_path / "two"
    for name, size in (("big_1", 128), ("small_1", 64)):
        fakedata.make_scene(folder, size=size, name=name, lcz="probabilities")
    # Tell the scenes apart by a band value: rewrite small_1's image with a different B2.
    path = folder / "small_1_l1c.tif"
    with rasterio.open(path, "r+") as dst:
        band = dst.read(2)
        dst.write(np.where(band > 0, 5000, 0).astype(band.dtype), 2)
    datasets = open_datasets(folder, patch_size=32)
    counts = {"small": 0, "big": 0}
    mixed = 0
    for x, _ in iterate_batches(datasets, 8, training=True, seed=0, epoch=0, mix=True, augment=False):
        small = np.isclose(x["image"][:, 16, 16, 0], 0.5)
        counts["small"] += int(small.sum())
        counts["big"] += int((~small).sum())
        mixed += int(0 < small.sum() < len(small))
    assert counts == {"small": len(datasets[1]), "big": len(datasets[0])} or \
        counts == {"small": len(datasets[0]), "big": len(datasets[1])}
    assert mixed >= 1


def test_balance_scene_gives_every_city_scene_the_same_windows_and_keeps_patch_files_by_area(folder, tmp_path):
    from core.training.datasets import balance_scenes

    eurosat = fakedata.make_eurosat_h5(tmp_path / "eurosat.h5", n=10)
    datasets = open_datasets(eurosat, patch_size=32) + open_datasets(folder, patch_size=32)
    by_area = [len(d) for d in datasets]
    assert len(set(by_area[1:])) == 3          # the three fake cities differ in size
    balance_scenes(datasets, "area")
    assert [len(d) for d in datasets] == by_area
    balance_scenes(datasets, "scene")
    share = round(sum(by_area[1:]) / 3)
    assert [len(d) for d in datasets] == [by_area[0], share, share, share]
    batches = list(iterate_batches(datasets, 4, training=True, seed=0, epoch=0, mix=True))
    assert sum(x["image"].shape[0] for x, _ in batches) == by_area[0] + 3 * share
    part, _ = datasets[3].split(0.5, 0)     # gamma, 96 px: two blocks of 64 px
    assert part.epoch_windows is None and len(part) == max(1, int(np.ceil(part.area_px() / 32 ** 2)))
    with pytest.raises(UrbanMTLError, match="balance must be one of area, scene"):
        balance_scenes(datasets, "city")


def test_balance_is_checked_before_any_data_is_read(tmp_path):
    from core.training.run import train

    with pytest.raises(UrbanMTLError, match="balance must be one of area, scene, got 'cities'"):
        train(TrainConfig(data=[str(tmp_path / "nowhere")], out=str(tmp_path / "run"), balance="cities"))


@pytest.mark.skipif(not CITIES.exists(), reason="../shared/data/cities is not available")
def test_aligned_reference_windows_equal_gdal_warping(monkeypatch):
    """The shared references lie on the image's 20 m grid: their windows skip GDAL's warper, with the same
    values (HSE averaged at 20 m, LCZ probabilities bilinear at 10 m)."""
    [scene] = [d for d in open_datasets(CITIES, patch_size=64) if d.name.startswith("rio")]
    windows = [(0, 0), (100, 38), (scene.height - scene.height % 2 - 64, scene.width - scene.width % 2 - 64)]
    fast = [scene._read_window(*w) for w in windows]
    assert scene._lcz_ref._aligned_factor(scene.transform) == 2
    assert scene._hse_ref._aligned_factor(scene.transform * Affine.scale(2)) == 1
    monkeypatch.setattr(RasterReference, "_aligned_factor", lambda self, t: None)
    slow = [scene._read_window(*w) for w in windows]
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], atol=1e-5)
        np.testing.assert_allclose(a[2], b[2], atol=1e-5)


def test_maps_are_scored_per_100m_cell_against_the_reference(tmp_path):
    """core.evaluate_maps: a map equal to the reference scores 1; one class swapped scores its share."""
    from core.data import load_manifest
    from core.evaluation.maps import reference_lcz_cells, score_maps

    manifest = fakedata.make_scene(tmp_path, size=100, name="city_1", lcz="probabilities")
    spec = load_manifest(manifest)
    cells = fakedata.scene_transform(pixel=100.0)
    lcz_path = fakedata.write_raster(tmp_path / "lcz.tif", np.ones((1, 10, 10), np.uint8), transform=cells, nodata=0)
    with rasterio.open(lcz_path) as src:
        reference = reference_lcz_cells(spec, src)
    assert reference.shape == (10, 10) and (reference > 0).sum() >= 95   # (a cell may have no label)
    predicted = np.where(reference > 0, reference, 5)
    predicted[4, :] = np.where(reference[4, :] == 17, 14, 17)       # one row of cells wrong
    fakedata.write_raster(lcz_path, predicted[None].astype(np.uint8), transform=cells, nodata=0)
    truth = fakedata.scene_hse_percent(100).astype(np.float32) / 100
    truth[truth > 1] = -1
    hse = (truth + np.where(truth >= 0, 0.05, 0))[None].astype(np.float32)
    hse_path = fakedata.write_raster(tmp_path / "hse.tif", hse, transform=fakedata.scene_transform(pixel=20.0),
                                     nodata=-1)
    score = score_maps(spec, str(hse_path), str(lcz_path))
    labelled = reference > 0
    assert score["lcz"]["cells"] == labelled.sum()
    assert score["lcz"]["oa"] == pytest.approx(1 - 10 / labelled.sum())
    assert score["lcz"]["built_share_reference"] == pytest.approx((reference[labelled] <= 10).mean())
    # The fake HSE reference lies on another CRS (EPSG:3035): warping it back blurs it a little.
    assert score["hse"]["mae"] == pytest.approx(0.05, abs=0.01)


def test_excluded_scenes_are_neither_trained_nor_validated_on(folder):
    datasets = open_datasets(folder, patch_size=32)
    train, val = split_datasets(datasets, TrainConfig(exclude_scenes=["beta"], val_scenes=["gamma"]))
    assert [d.name for d in train] == ["alpha_20170101"] and [d.name for d in val] == ["gamma_20170303"]
    with pytest.raises(UrbanMTLError, match="exclude_scenes names delta, but no training dataset"):
        split_datasets(open_datasets(folder, patch_size=32), TrainConfig(exclude_scenes=["delta"]))
    with pytest.raises(UrbanMTLError, match="leaves out every dataset"):
        split_datasets(open_datasets(folder, patch_size=32), TrainConfig(exclude_scenes=["alpha", "beta", "gamma"]))
