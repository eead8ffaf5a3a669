"""Format detection, forced formats, patch-file readers and every user-facing error of core.data."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from core.data import (
    AuthorsDataset, EuroSATDataset, SceneDataset, So2SatDataset, detect_format, open_datasets, split_spec,
)
from core.common.errors import UrbanMTLError
from tests import fakedata


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    return {
        "authors": fakedata.make_authors_h5(root / "authors.h5", n=6, size=16),
        "so2sat": fakedata.make_so2sat_h5(root / "so2sat.h5", n=20),
        "eurosat": fakedata.make_eurosat_h5(root / "eurosat.h5", n=10, size=16),
        "scene": fakedata.make_scene(root / "scene", size=48, lcz="codes"),
        "root": root,
    }


def _open1(spec, patch_size=16):
    datasets = open_datasets(str(spec), patch_size=patch_size)
    assert len(datasets) == 1
    return datasets[0]


def test_detects_each_format_from_content(files, tmp_path):
    expected = {"authors": AuthorsDataset, "so2sat": So2SatDataset, "eurosat": EuroSATDataset,
                "scene": SceneDataset}
    for fmt, cls in expected.items():
        ds = _open1(files[fmt])
        assert isinstance(ds, cls) and ds.format == fmt
    # Content decides, not the file name: an authors file named like a manifest is still authors.
    disguised = tmp_path / "looks_like.yaml"
    disguised.write_bytes(files["authors"].read_bytes())
    assert detect_format(disguised) == "authors"
    # A JSON manifest is a scene too.
    json_manifest = fakedata.make_scene(tmp_path / "js", size=48, manifest="json")
    assert json_manifest.suffix == ".json" and detect_format(json_manifest) == "scene"


def test_forced_format_and_prefix_parsing(files):
    ds = _open1(f"so2sat:{files['so2sat']}")
    assert isinstance(ds, So2SatDataset)
    assert split_spec("EUROSAT:/a/b.h5") == ("eurosat", split_spec("/a/b.h5")[1])
    # Something before a colon that is not a format (a drive letter) stays part of the path.
    assert split_spec("C:/data/x.h5")[0] is None
    # Forcing a format the content does not fit names the missing datasets.
    with pytest.raises(UrbanMTLError, match=r"sen2.*so2sat"):
        open_datasets(f"so2sat:{files['authors']}")
    with pytest.raises(UrbanMTLError, match="not an HDF5 file"):
        open_datasets(f"authors:{files['scene']}")


def test_authors_reader_values(tmp_path):
    path = fakedata.make_authors_h5(tmp_path / "a.h5", n=4, size=16, seed=3)
    ds = _open1(path)
    assert (ds.patch_size, len(ds), ds.has_hse, ds.has_lcz) == (16, 4, True, True)
    image, hse, lcz = ds.read_units([2, 0])
    with h5py.File(path) as f:
        np.testing.assert_allclose(image[0], f["x"][2])
        np.testing.assert_allclose(hse[1, ..., 0], f["y_0"][0, ..., 0] / 100.0)
        np.testing.assert_array_equal(lcz[0], f["y_1"][2])
    assert hse.shape == (2, 8, 8, 1) and lcz.shape == (2, 16, 16, 17)
    # Planted rule: the built square is bright in B2 and has HSE 1 and LCZ 2.
    built = lcz[..., fakedata.BUILT_CODE - 1] == 1
    assert np.all(image[..., fakedata.B2][built] > 0.25) and np.all(image[..., fakedata.B2][~built] < 0.15)
    hse10 = np.repeat(np.repeat(hse[..., 0], 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(hse10 == 1.0, built)


def test_authors_full_res_hse_missing_labels_and_nodata(tmp_path):
    full = _open1(fakedata.make_authors_h5(tmp_path / "full.h5", n=4, size=16, hse_full_res=True,
                                           nodata=True))
    half = _open1(fakedata.make_authors_h5(tmp_path / "half.h5", n=4, size=16, nodata=True))
    f_img, f_hse, f_lcz = full.read_units([0, 1, 2, 3])
    h_img, h_hse, h_lcz = half.read_units([0, 1, 2, 3])
    assert f_hse.shape == h_hse.shape == (4, 8, 8, 1)
    np.testing.assert_allclose(f_hse, h_hse, equal_nan=True)
    # Planted nodata: patch 0 image rows 0..3 -> mirrored from rows 4..7, LCZ none, HSE NaN on 20 m rows 0..1.
    np.testing.assert_array_equal(h_img[0, :4], h_img[0, 7:3:-1])
    assert np.all(h_lcz[0, :4] == 0) and np.all(np.isnan(h_hse[0, :2]))
    assert np.all(np.isfinite(h_hse[0, 2:])) and np.all(h_lcz[0, 4:].sum(-1) == 1)
    # patch 1: HSE 255 (HRL nodata) in its first 20 m row -> NaN; patch 2: LCZ rows 0..1 empty.
    assert np.all(np.isnan(h_hse[1, 0])) and np.all(np.isfinite(h_hse[1, 1:]))
    assert np.all(h_lcz[2, :2] == 0) and np.all(h_lcz[2, 2:].sum(-1) == 1)

    no_hse = _open1(fakedata.make_authors_h5(tmp_path / "nohse.h5", n=2, size=16, with_hse=False))
    no_lcz = _open1(fakedata.make_authors_h5(tmp_path / "nolcz.h5", n=2, size=16, with_lcz=False))
    assert (no_hse.has_hse, no_hse.has_lcz, no_lcz.has_hse, no_lcz.has_lcz) == (False, True, True, False)
    assert np.all(np.isnan(no_hse.read_units([0])[1])) and np.all(no_lcz.read_units([1])[2] == 0)


def test_so2sat_reader_broadcasts_patch_label(files):
    ds = _open1(files["so2sat"])
    assert (ds.patch_size, ds.has_hse, ds.has_lcz, len(ds)) == (32, False, True, 20)
    image, hse, lcz = ds.read_units([5, 18, 0])
    assert np.all(np.isnan(hse)) and hse.shape == (3, 16, 16, 1)
    codes = lcz.argmax(-1) + 1
    np.testing.assert_array_equal(codes, np.rint(image[..., 0] * 100).astype(int))
    assert set(np.unique(codes[0])) == {6} and set(np.unique(codes[1])) == {2}


def test_eurosat_reader_band_order_scaling_and_labels(tmp_path):
    for attr in (True, False):
        ds = _open1(fakedata.make_eurosat_h5(tmp_path / f"e{attr}.h5", n=10, size=16, band_names_attr=attr))
        image, hse, lcz = ds.read_units([0, 3])
        # B8A is the LAST file band (DN 4242) and sits at model position 7; B12 (2121) is last in model order.
        np.testing.assert_allclose(image[..., fakedata.B8A], 0.4242, atol=2e-4)
        np.testing.assert_allclose(image[..., fakedata.B12], 0.2121, atol=2e-4)
        np.testing.assert_allclose(image[..., fakedata.B11], 0.2000, atol=2e-4)
        np.testing.assert_allclose(image[..., fakedata.B2], 0.1100, atol=2e-4)
        # HSE: 255 in the left half at 10 m -> 1.0 at 20 m, 0 right.
        assert np.all(hse[:, :, :4] == 1.0) and np.all(hse[:, :, 4:] == 0.0)
        np.testing.assert_allclose(lcz.sum(-1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(lcz[0, 0, 0, :2], [128 / 255, 127 / 255], rtol=1e-6)
        assert np.all(lcz[1].argmax(-1) == 3)
        assert ds.patch_labels() == [fakedata.EUROSAT_CLASSES[i % 10] for i in range(10)]
        train, val = ds.split(0.3, seed=1)
        assert val.patch_labels() == [fakedata.EUROSAT_CLASSES[i % 10] for i in val.indices]


# --- errors ---


def test_error_missing_path(tmp_path):
    with pytest.raises(UrbanMTLError, match=r"does not exist"):
        open_datasets(str(tmp_path / "nope.h5"))


def test_error_unknown_formats_list_contents(tmp_path, files):
    text = tmp_path / "notes.txt"
    text.write_text("just some words\n")
    with pytest.raises(UrbanMTLError, match=r"Unknown format.*Supported formats: authors"):
        open_datasets(str(text))
    mapping = tmp_path / "cfg.yaml"
    mapping.write_text("epochs: 3\nlr: 0.1\n")
    with pytest.raises(UrbanMTLError, match=r"keys epochs, lr but no 'image'"):
        open_datasets(str(mapping))
    h5 = tmp_path / "other.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 8, 8, 10)))
    with pytest.raises(UrbanMTLError, match=r"images \(2, 8, 8, 10\).*matches no supported format"):
        open_datasets(str(h5))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UrbanMTLError, match="neither HDF5 nor"):
        open_datasets(str(binary))
    raster = next(files["scene"].parent.glob("*_l1c.tif"))
    with pytest.raises(UrbanMTLError, match=r"is a raster \(13 band.*scene manifest"):
        open_datasets(str(raster))
    with pytest.raises(UrbanMTLError, match="Cannot tell what kind of data the folder"):
        open_datasets(str(tmp_path))


def test_error_hdf5_without_expected_keys(tmp_path):
    path = tmp_path / "xonly.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros((2, 16, 16, 10), np.float32))
    with pytest.raises(UrbanMTLError, match=r"neither y_0 \(HSE\) nor y_1"):
        open_datasets(f"authors:{path}")
    with pytest.raises(UrbanMTLError, match=r"no dataset\(s\) lcz_prob"):
        open_datasets(f"eurosat:{path}")


def test_error_label_shape_mismatches(tmp_path):
    base = fakedata.make_authors_h5(tmp_path / "ok.h5", n=4, size=16)
    cases = {
        "n_y0": ("y_0", np.zeros((3, 8, 8, 1), np.float32), r"y_0 has 3 entries but x has 4"),
        "hw_y0": ("y_0", np.zeros((4, 4, 4, 1), np.float32), r"y_0 .*shape \(4, 4, 4, 1\)"),
        "n_y1": ("y_1", np.zeros((5, 16, 16, 17), np.float32), r"y_1 has 5 entries"),
        "hw_y1": ("y_1", np.zeros((4, 8, 8, 17), np.float32), r"y_1 .*shape \(4, 8, 8, 17\)"),
        "cls_y1": ("y_1", np.zeros((4, 16, 16, 10), np.float32), r"y_1 .*shape \(4, 16, 16, 10\)"),
    }
    for name, (key, data, message) in cases.items():
        path = tmp_path / f"{name}.h5"
        path.write_bytes(base.read_bytes())
        with h5py.File(path, "a") as f:
            del f[key]
            f.create_dataset(key, data=data)
        with pytest.raises(UrbanMTLError, match=message):
            open_datasets(str(path))
    so2sat = tmp_path / "s.h5"
    with h5py.File(so2sat, "w") as f:
        f.create_dataset("sen2", data=np.zeros((4, 32, 32, 10)))
        f.create_dataset("label", data=np.zeros((3, 17)))
    with pytest.raises(UrbanMTLError, match="label has 3 entries but sen2 has 4"):
        open_datasets(str(so2sat))


def test_error_wrong_band_count_and_patch_geometry(tmp_path):
    with pytest.raises(UrbanMTLError, match=r"x has 12 bands.*10 Sentinel-2 bands"):
        open_datasets(str(fakedata.make_authors_h5(tmp_path / "b12.h5", n=2, size=16, bands=12)))
    odd = tmp_path / "odd.h5"
    with h5py.File(odd, "w") as f:
        f.create_dataset("sen2", data=np.zeros((2, 30, 30, 10)))
        f.create_dataset("label", data=np.zeros((2, 17)))
    with pytest.raises(UrbanMTLError, match=r"30 x 30 pixels.*multiple of 8"):
        open_datasets(str(odd))


@pytest.mark.parametrize("bad", [0, 12, 100, -8, 16.0, "128"])
def test_error_patch_size_not_multiple_of_8(files, bad):
    with pytest.raises(UrbanMTLError, match="patch"):
        open_datasets(str(files["authors"]), patch_size=bad)


def test_split_by_patch_is_disjoint_and_seeded(files):
    ds = _open1(files["so2sat"])
    train, val = ds.split(0.25, seed=7)
    assert len(val) == 5 and len(train) == 15
    assert not set(train.indices) & set(val.indices)
    assert set(train.indices) | set(val.indices) == set(range(20))
    again = ds.split(0.25, seed=7)[1]
    other = ds.split(0.25, seed=8)[1]
    assert list(again.indices) == list(val.indices) and list(other.indices) != list(val.indices)
    assert val.describe()["subset"] == "val" and val.describe()["split"]["by"] == "patch"
    json.dumps(val.describe())
    with pytest.raises(UrbanMTLError, match="val_fraction"):
        ds.split(1.0, seed=0)
    one = ds.split(0.95, seed=0)[0]
    with pytest.raises(UrbanMTLError, match="too few to split"):
        one.split(0.5, seed=0)
