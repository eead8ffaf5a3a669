"""Batches: splits by area, window skipping, augmentation consistency, determinism, counts, tf.data."""

from __future__ import annotations

import numpy as np
import pytest

from core.data import SceneDataset, iterate_batches, open_datasets, steps_per_epoch, tf_dataset
from core.data.augment import NUM_TRANSFORMS, augment_sample, dihedral
from core.common.errors import UrbanMTLError
from tests import fakedata


def _one(path, patch_size=16):
    [ds] = open_datasets(str(path), patch_size=patch_size)
    return ds


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    return {
        "authors": _one(fakedata.make_authors_h5(root / "a.h5", n=10, size=16)),
        "so2sat": _one(fakedata.make_so2sat_h5(root / "s.h5", n=7)),
        "scene": _one(fakedata.make_scene(root / "scene", size=96), patch_size=16),
        "root": root,
    }


def _collect(datasets, batch_size, **kwargs):
    return [(x["image"].copy(), y["hse"].copy(), y["lcz"].copy())
            for x, y in iterate_batches(datasets, batch_size, **kwargs)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y, equal_nan=True) for p, q in zip(a, b) for x, y in zip(p, q))


# --- splits ---


def _overlaps(window, block, p):
    r, c = window
    r0, r1, c0, c1 = block
    return r < r1 and r + p > r0 and c < c1 and c + p > c0


def test_scene_split_by_area_blocks_are_disjoint(data):
    scene: SceneDataset = data["scene"]
    p = scene.patch_size
    assert len(scene.blocks) == 9 and len(scene) == 36
    train, val = scene.split(0.3, seed=3)
    assert len(val.blocks) == 3 and len(train.blocks) == 6
    assert not set(train.blocks) & set(val.blocks) and set(train.blocks) | set(val.blocks) == set(scene.blocks)
    assert (len(train), len(val)) == (24, 12) and val.num_eval_samples() == 12
    assert scene.split(0.3, seed=3)[1].blocks == val.blocks and scene.split(0.3, seed=4)[1].blocks != val.blocks
    # Validation tiles cover exactly the validation blocks.
    covered = np.zeros((96, 96), dtype=int)
    for r, c in val.tiles():
        assert any(r >= b[0] and r + p <= b[1] and c >= b[2] and c + p <= b[3] for b in val.blocks)
        covered[r:r + p, c:c + p] += 1
    mask = np.zeros((96, 96), dtype=bool)
    for r0, r1, c0, c1 in val.blocks:
        mask[r0:r1, c0:c1] = True
    assert np.all(covered[mask] == 1) and np.all(covered[~mask] == 0)
    # Every window a training epoch reads (redraws included) lies in a training block, away from validation.
    seen = []
    original = train._read_window
    train._read_window = lambda r, c: (seen.append((r, c)), original(r, c))[1]
    for epoch in range(3):
        _collect([train], 5, training=True, seed=0, epoch=epoch)
    assert len(seen) >= 3 * len(train)
    for window in seen:
        assert window[0] % 2 == 0 and window[1] % 2 == 0
        assert not any(_overlaps(window, b, p) for b in val.blocks)
        assert any(window[0] >= b[0] and window[0] + p <= b[1] and window[1] >= b[2] and window[1] + p <= b[3]
                   for b in train.blocks)
    assert val.describe()["split"] == {"by": "area", "block_size": 32, "val_fraction": 0.3, "seed": 3}


def test_scene_split_needs_two_blocks(tmp_path):
    ds = _one(fakedata.make_scene(tmp_path, size=48), patch_size=32)
    assert len(ds.blocks) == 1 and ds.blocks[0] == (0, 48, 0, 48)  # the narrow strip joined its block
    assert ds.tiles() == [(0, 0), (0, 16), (16, 0), (16, 16)]
    with pytest.raises(UrbanMTLError, match=r"only 1 block.*smaller patch_size"):
        ds.split(0.2, seed=0)


def test_training_windows_skip_nodata_and_unreferenced(tmp_path):
    mostly_empty = _one(fakedata.make_scene(tmp_path / "n", size=96, nodata_cols=60), patch_size=32)
    assert steps_per_epoch([mostly_empty], 2, training=True) == len(_collect([mostly_empty], 2, training=True))
    # Nodata pixels are filled in the image (core.inputs.fill) and have no LCZ reference: at most half a window.
    for _, _, lcz in _collect([mostly_empty], 2, training=True, seed=1):
        nodata_share = (lcz.sum(axis=-1) == 0).mean(axis=(1, 2))
        assert np.all(nodata_share <= 0.5)
    # Evaluation keeps every tile, including the ones that are all nodata (no reference at all).
    evaluated = _collect([mostly_empty], 1, training=False)
    assert any(np.all(lcz.sum(axis=-1) == 0) for _, _, lcz in evaluated)
    # Polygons cover a small part of the scene: every training window still has some LCZ reference.
    sparse = _one(fakedata.make_scene(tmp_path / "p", size=96, hse=False, lcz="polygons"), patch_size=16)
    batches = _collect([sparse], 4, training=True, seed=2, augment=False)
    assert sum(len(b[0]) for b in batches) == len(sparse)
    for _, _, lcz in batches:
        assert np.all(lcz.sum(axis=(1, 2, 3)) > 0)


# --- augmentation ---


def test_dihedral_transforms_are_eight_distinct_and_keep_labels_aligned():
    rng = np.random.default_rng(0)
    image = rng.random((8, 8, 10)).astype(np.float32)
    hse = image[..., 0].reshape(4, 2, 4, 2).mean(axis=(1, 3))[..., None]
    codes = (image[..., 1] * 17).astype(int) + 1
    lcz = fakedata._onehot(codes)
    outputs = set()
    for k in range(NUM_TRANSFORMS):
        img_k, hse_k, lcz_k = augment_sample(image, hse, lcz, k)
        np.testing.assert_allclose(img_k[..., 0].reshape(4, 2, 4, 2).mean(axis=(1, 3)), hse_k[..., 0], rtol=1e-6)
        np.testing.assert_array_equal(lcz_k.argmax(-1) + 1, (img_k[..., 1] * 17).astype(int) + 1)
        outputs.add(img_k.tobytes())
    assert len(outputs) == NUM_TRANSFORMS
    np.testing.assert_array_equal(dihedral(image, 0), image)
    with pytest.raises(ValueError):
        dihedral(image, 8)


def test_augmented_batches_keep_the_planted_rule(data):
    plain = _collect([data["authors"]], 4, training=True, seed=5, augment=False)
    augmented = _collect([data["authors"]], 4, training=True, seed=5, augment=True)
    assert not _same(plain, augmented)
    for image, hse, lcz in augmented:
        built = lcz[..., fakedata.BUILT_CODE - 1] == 1
        assert np.all(image[..., fakedata.B2][built] > 0.25) and np.all(image[..., fakedata.B2][~built] < 0.15)
        np.testing.assert_array_equal(np.repeat(np.repeat(hse[..., 0], 2, 1), 2, 2) == 1.0, built)


def test_spectral_jitter_scales_bands_only(data):
    plain = _collect([data["authors"]], 4, training=True, seed=1, augment=False)
    jittered = _collect([data["authors"]], 4, training=True, seed=1, augment=False, spectral_jitter=0.1)
    for (img, hse, lcz), (img_j, hse_j, lcz_j) in zip(plain, jittered):
        np.testing.assert_array_equal(lcz, lcz_j)
        np.testing.assert_array_equal(hse, hse_j)
        ratio = img_j / img
        # One factor per sample and band, not per pixel.
        np.testing.assert_allclose(ratio, ratio[:, :1, :1, :] * np.ones_like(ratio), rtol=1e-5)
        assert ratio[:, 0, 0, :].std() > 0.01
    with pytest.raises(UrbanMTLError, match="spectral_jitter"):
        next(iterate_batches([data["authors"]], 4, training=True, spectral_jitter=-1))


# --- order, determinism, counts ---


def test_determinism_and_fresh_order_per_epoch(data):
    datasets = [data["authors"], data["so2sat"], data["scene"]]
    first = _collect(datasets, 3, training=True, seed=11, epoch=2, spectral_jitter=0.05)
    again = _collect(datasets, 3, training=True, seed=11, epoch=2, spectral_jitter=0.05)
    assert _same(first, again)
    assert not _same(first, _collect(datasets, 3, training=True, seed=11, epoch=3, spectral_jitter=0.05))
    assert not _same(first, _collect(datasets, 3, training=True, seed=12, epoch=2, spectral_jitter=0.05))
    evaluation = _collect(datasets, 3, training=False)
    assert _same(evaluation, _collect(datasets, 3, training=False))


def test_batches_interleave_datasets_and_keep_partial_batches(data):
    datasets = [data["authors"], data["so2sat"], data["scene"]]
    batches = _collect(datasets, 4, training=True, seed=0)
    # authors 10 -> 4,4,2; so2sat 7 -> 4,3; scene 36 -> 9 x 4.
    assert len(batches) == steps_per_epoch(datasets, 4, training=True) == 3 + 2 + 9
    sizes = {}
    owners = []
    for image, hse, lcz in batches:
        b, h, w, c = image.shape
        assert c == 10 and hse.shape == (b, h // 2, w // 2, 1) and lcz.shape == (b, h, w, 17)
        assert image.dtype == hse.dtype == lcz.dtype == np.float32
        owner = {16: "authors/scene", 32: "so2sat"}[h]
        owners.append(owner)
        sizes.setdefault(owner, []).append(b)
    assert sorted(sizes["so2sat"]) == [3, 4] and sum(sizes["authors/scene"]) == 10 + 36
    # Interleaved: so2sat batches are not simply all first or all last.
    positions = [i for i, o in enumerate(owners) if o == "so2sat"]
    assert positions != [0, 1] and positions != [len(owners) - 2, len(owners) - 1]
    # Evaluation: every patch/tile once, datasets in order, fixed patch order.
    evaluation = _collect(datasets, 4, training=False)
    assert len(evaluation) == steps_per_epoch(datasets, 4, training=False) == 3 + 2 + 9
    codes = np.concatenate([lcz.argmax(-1)[:, 0, 0] + 1 for _, _, lcz in evaluation[3:5]])
    np.testing.assert_array_equal(codes, np.arange(7) % 17 + 1)


def test_bad_batch_arguments(data):
    with pytest.raises(UrbanMTLError, match="batch_size"):
        steps_per_epoch([data["authors"]], 0, training=True)
    with pytest.raises(UrbanMTLError, match="No datasets"):
        next(iterate_batches([], 4, training=True))
    with pytest.raises(UrbanMTLError, match="seed"):
        next(iterate_batches([data["authors"]], 4, training=True, seed=-1))


def test_tf_dataset_reiterates_with_a_new_epoch(data):
    tf = pytest.importorskip("tensorflow")
    datasets = [data["authors"], data["so2sat"]]
    calls = []

    def epoch_fn() -> int:
        calls.append(len(calls))
        return calls[-1]

    pipeline = tf_dataset(datasets, 4, training=True, seed=3, epoch_fn=epoch_fn)
    spec = pipeline.element_spec
    assert spec[0]["image"].shape.as_list() == [None, None, None, 10]
    assert spec[1]["lcz"].shape.as_list() == [None, None, None, 17]
    for epoch in range(2):
        got = [(x["image"].numpy(), y["hse"].numpy(), y["lcz"].numpy()) for x, y in pipeline]
        assert calls == list(range(epoch + 1))
        assert _same(got, _collect(datasets, 4, training=True, seed=3, epoch=epoch))
    assert isinstance(pipeline, tf.data.Dataset)


def test_atmosphere_changes_the_light_not_the_nodata_nor_the_sign():
    from core.data.augment import atmosphere

    rng = np.random.default_rng(0)
    image = rng.uniform(0.02, 0.4, size=(6, 32, 32, 10)).astype(np.float32)
    image[0, :4] = 0.0                                   # nodata rows
    out = atmosphere(image, 1.0, np.random.default_rng(5))
    assert out.dtype == np.float32 and out.shape == image.shape
    assert (out[0, :4] == 0).all() and (out >= 0).all()
    assert np.abs(out - image).mean() > 0.005
    assert np.array_equal(out, atmosphere(image, 1.0, np.random.default_rng(5)))     # seeded
    assert atmosphere(image, 0.0, rng) is image
    # Path radiance and haze brighten the blue (B2) more than the short-wave infrared (B12) on average.
    shift = (out - image)[1:].mean(axis=(0, 1, 2))
    assert shift[0] > shift[9]
