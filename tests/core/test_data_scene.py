"""Scene manifests: references from other grids and CRSs land where they should; nodata; errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine

from core.data import MANIFEST_KEYS, SceneDataset, open_datasets
from core.data.reference_polygons import parse_lcz_value
from core.common.errors import UrbanMTLError
from tests import fakedata

SIZE = 96


def _scene(path, patch_size=SIZE) -> SceneDataset:
    [ds] = open_datasets(str(path), patch_size=patch_size)
    assert isinstance(ds, SceneDataset)
    return ds


def _whole(ds: SceneDataset):
    """The whole fake scene as one window (patch_size = SIZE)."""
    image, hse, lcz = ds.read_units([(0, 0)])
    codes = np.where(lcz[0].sum(-1) > 0, lcz[0].argmax(-1) + 1, 0)
    return image[0], hse[0, ..., 0], lcz[0], codes


@pytest.fixture(scope="module")
def codes_scene(tmp_path_factory):
    return _scene(fakedata.make_scene(tmp_path_factory.mktemp("codes"), size=SIZE, nodata_cols=6))


def test_image_bands_scaling_and_nodata(codes_scene):
    image, hse, lcz, codes = _whole(codes_scene)
    assert image.shape == (SIZE, SIZE, 10) and image.dtype == np.float32
    # L1C file band j = 1000 + 10 j DN; model band B5 is file band 4, B12 file band 12.
    np.testing.assert_allclose(image[50, 50, fakedata.B5], 0.104, rtol=1e-6)
    np.testing.assert_allclose(image[50, 50, fakedata.B12], 0.112, rtol=1e-6)
    np.testing.assert_allclose(image[10, 50, fakedata.B8A], 0.35, rtol=1e-6)
    np.testing.assert_allclose(image[70, 50, fakedata.B8], 0.02, rtol=1e-6)
    np.testing.assert_allclose(image[30, 30, fakedata.B4], 0.30, rtol=1e-6)
    # Image nodata (first 6 columns): filled by mirroring the valid columns 6.. (as the inference reader
    # does), no LCZ, no HSE in 20 m columns 0..2.
    np.testing.assert_array_equal(image[:, :6], image[:, 11:5:-1])
    assert np.all(codes[:, :6] == 0)
    assert np.all(np.isnan(hse[:, :3])) and np.isfinite(hse[:30, 3:]).all()


def test_hse_from_another_crs_lands_where_it_should(codes_scene):
    _, hse, _, _ = _whole(codes_scene)
    assert hse.shape == (SIZE // 2, SIZE // 2)
    q = SIZE // 8  # a quarter of the scene in 20 m pixels; the square is 20 m rows/cols q .. 2q-1
    # Interior of the square (2 px from its edge: EPSG:3035 is rotated against UTM, edges blend).
    np.testing.assert_allclose(hse[q + 2:2 * q - 2, q + 2:2 * q - 2], fakedata.SCENE_HSE_PERCENT / 100)
    np.testing.assert_allclose(hse[2 * q + 2:3 * q - 2, q:3 * q], 0.0)
    # HRL nodata 254 (bottom left) and 255 (bottom right) become NaN, never averaged in.
    assert np.all(np.isnan(hse[3 * q + 2:, 3:q - 2])) and np.all(np.isnan(hse[3 * q + 2:, 3 * q + 2:]))
    assert np.nanmax(hse) <= 0.8 + 1e-6
    # The half-way contour of the square's left edge sits at 20 m column q (within a pixel).
    row = hse[q + q // 2]
    assert row[q - 2] < 0.05 and row[q + 1] > 0.75


def test_hse_percent_scale_from_geographic_crs(tmp_path):
    ds = _scene(fakedata.make_scene(tmp_path, size=SIZE, hse_crs="EPSG:4326", lcz=None))
    _, hse, _, codes = _whole(ds)
    q = SIZE // 8
    assert ds.spec.hse_scale == pytest.approx(0.01) and not ds.has_lcz and np.all(codes == 0)
    np.testing.assert_allclose(hse[q + 2:2 * q - 2, q + 2:2 * q - 2], 0.8)
    np.testing.assert_allclose(hse[2 * q + 2:3 * q - 2, :], 0.0)


def test_lcz_codes_with_aliases_nearest_from_100m(codes_scene):
    _, _, lcz, codes = _whole(codes_scene)
    cells = fakedata.scene_lcz_cells(SIZE)
    # Every 10 m pixel takes the 100 m cell it lies in; 104 -> 14 (D), 107 -> 17 (G); 0 -> no reference.
    expected = np.repeat(np.repeat(cells, 10, axis=0), 10, axis=1)[:SIZE, :SIZE].astype(int)
    expected = np.where(expected > 100, expected - 90, expected)
    expected[:, :6] = 0  # image nodata
    np.testing.assert_array_equal(codes, expected)
    assert codes[35, 35] == 2 and codes[25, 50] == 14 and codes[60, 50] == 17 and codes[5, 8] == 0
    np.testing.assert_array_equal(lcz.sum(-1), (expected > 0).astype(np.float32))


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3035"])
def test_lcz_codes_from_another_crs(tmp_path, crs):
    ds = _scene(fakedata.make_scene(tmp_path, size=SIZE, hse=False, lcz_crs=crs))
    _, _, _, codes = _whole(ds)
    cells = fakedata.scene_lcz_cells(SIZE).astype(int)
    expected = np.repeat(np.repeat(np.where(cells > 100, cells - 90, cells), 10, 0), 10, 1)[:SIZE, :SIZE]
    # Away from cell outlines (re-stepped by the reprojection) every pixel keeps its cell's code.
    inner = np.zeros((SIZE, SIZE), dtype=bool)
    for k in range(0, SIZE, 10):
        inner[k + 2:k + 8] = True
    inner &= inner.T
    np.testing.assert_array_equal(codes[inner], expected[inner])
    assert (codes == expected).mean() > 0.9 and codes[35, 35] == 2 and codes[5, 5] == 0


def test_lcz_probability_raster(tmp_path):
    ds = _scene(fakedata.make_scene(tmp_path, size=SIZE, lcz="probabilities", hse=False,
                                    extra={"lcz_resampling": "nearest"}))
    assert ds.spec.lcz_kind == "probabilities" and not ds.has_hse
    _, hse, lcz, codes = _whole(ds)
    assert np.all(np.isnan(hse))
    cells = fakedata.scene_lcz_cells(SIZE).astype(int)
    expected = np.repeat(np.repeat(np.where(cells > 100, cells - 90, cells), 10, 0), 10, 1)[:SIZE, :SIZE]
    np.testing.assert_array_equal(codes, expected)
    valid = expected > 0
    np.testing.assert_allclose(lcz.sum(-1)[valid], 1.0, rtol=1e-6)
    # Bilinear (the default) blends at cell borders but keeps cell centres and sums of 1.
    bil = _scene(fakedata.make_scene(tmp_path / "bil", size=SIZE, lcz="probabilities", hse=False))
    _, _, lcz_b, codes_b = _whole(bil)
    assert codes_b[35, 35] == 2 and codes_b[45, 45] == 2 and codes_b[65, 65] == 17
    s = lcz_b.sum(-1)
    np.testing.assert_allclose(s[s > 0], 1.0, rtol=1e-5)
    assert 0 < lcz_b[30, 35, 1] < 1  # a pixel on the border of the LCZ-2 cells is soft


@pytest.mark.parametrize("driver", ["GeoJSON", "GPKG", "KML"])
def test_polygon_rasterisation(tmp_path, driver):
    values = (2, 107) if driver == "GPKG" else ("2", "G")
    poly = fakedata.make_polygons(tmp_path, driver=driver, values=values,
                                  crs="EPSG:3035" if driver == "GPKG" else "EPSG:4326")
    attribute = "Name" if driver == "KML" else "lcz"
    manifest = fakedata.make_scene(tmp_path, size=SIZE, lcz=None,
                                   extra={"lcz_polygons": poly.name, "lcz_attribute": attribute})
    ds = _scene(manifest)
    _, _, lcz, codes = _whole(ds)
    (r0, c0, r1, c1), (s0, d0, s1, d1) = fakedata.POLYGON_BOXES
    expected = np.zeros((SIZE, SIZE), dtype=int)
    expected[r0:r1, c0:c1] = 2
    expected[s0:s1, d0:d1] = 17
    # Pixel centres decide, and they lie 5 m inside the edges: the CRS round trip cannot move them across.
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(lcz.sum(-1), (expected > 0).astype(np.float32))
    assert ds.describe()["references"]["lcz"]["attribute"] == attribute
    if driver == "KML":  # one folder per class, both read
        assert ds._lcz_polygons.layers == ["class_0", "class_1"]


def test_parse_lcz_value():
    assert [parse_lcz_value(v) for v in (1, "10", "A", "g", 101, "107", "LCZ 6", 17.0, None, "", 0)] == \
        [1, 10, 11, 17, 11, 17, 6, 17, None, None, None]
    for bad in ("H", 18, 108, "water", 2.5):
        with pytest.raises(ValueError):
            parse_lcz_value(bad)


def test_offset_and_band_layout_keys(tmp_path):
    plain = _scene(fakedata.make_scene(tmp_path / "a", size=48, lcz="codes", hse=False), patch_size=48)
    shifted = _scene(fakedata.make_scene(tmp_path / "b", size=48, lcz="codes", hse=False, offset=-1000),
                     patch_size=48)
    np.testing.assert_allclose(shifted.read_units([(0, 0)])[0], plain.read_units([(0, 0)])[0] - 0.1, atol=1e-6)
    # Without band descriptions a 13-band file is L1C by its count; layout/bands keys override.
    unnamed = fakedata.make_scene(tmp_path / "c", size=48, band_names=False, hse=False)
    np.testing.assert_allclose(_scene(unnamed, 48).read_units([(0, 0)])[0], plain.read_units([(0, 0)])[0])
    eurosat_order = fakedata.make_scene(tmp_path / "d", size=48, band_names=False, hse=False,
                                        extra={"layout": "EUROSAT"})
    img = _scene(eurosat_order, 48).read_units([(0, 0)])[0]
    # Read as EuroSAT, model B8A is the file's last band (L1C B12: 1000 + 120 DN).
    np.testing.assert_allclose(img[0, 40, 40, fakedata.B8A], 0.112, rtol=1e-6)


# --- errors ---


def test_error_manifest_unknown_key_and_missing_parts(tmp_path):
    good = fakedata.make_scene(tmp_path, size=48)
    keys = json.loads(json.dumps(__import__("yaml").safe_load(good.read_text())))
    bad = fakedata.write_manifest(tmp_path / "bad.yaml", {**keys, "lcz_colum": "x"})
    with pytest.raises(UrbanMTLError, match=r"unknown key\(s\) lcz_colum\. Valid keys: name, image"):
        open_datasets(str(bad))
    assert "lcz_attribute" in MANIFEST_KEYS
    missing = fakedata.write_manifest(tmp_path / "missing.yaml", {**keys, "hse": "nothere.tif"})
    with pytest.raises(UrbanMTLError, match=r"hse file '.*nothere.tif' named in .* does not exist"):
        open_datasets(str(missing))
    noref = fakedata.write_manifest(tmp_path / "noref.yaml", {"image": keys["image"]})
    with pytest.raises(UrbanMTLError, match="names no reference"):
        open_datasets(str(noref))
    both = fakedata.write_manifest(tmp_path / "both.yaml", {**keys, "lcz_polygons": keys["lcz"],
                                                            "lcz_attribute": "a"})
    with pytest.raises(UrbanMTLError, match="both 'lcz' and 'lcz_polygons'"):
        open_datasets(str(both))
    badnum = fakedata.write_manifest(tmp_path / "badnum.yaml", {**keys, "hse_scale": "a lot"})
    with pytest.raises(UrbanMTLError, match="hse_scale.*must be a number"):
        open_datasets(str(badnum))
    with pytest.raises(UrbanMTLError, match="layout 'XYZ'|Unknown band layout"):
        open_datasets(str(fakedata.write_manifest(tmp_path / "lay.yaml", {**keys, "layout": "XYZ"})))


def test_error_reference_does_not_overlap(tmp_path):
    far = fakedata.make_scene(tmp_path / "far", size=48, lcz=None, origin=(400000.0, 5700000.0))
    keys = __import__("yaml").safe_load(far.read_text())
    near = fakedata.make_scene(tmp_path / "near", size=48, lcz="codes", hse=False)
    manifest = fakedata.write_manifest(tmp_path / "near" / "mix.yaml",
                                       {"image": next((tmp_path / "near").glob("*_l1c.tif")).name,
                                        "hse": str(tmp_path / "far" / keys["hse"])})
    with pytest.raises(UrbanMTLError, match="does not overlap the image"):
        open_datasets(str(manifest), patch_size=48)
    polys = fakedata.make_polygons(tmp_path / "near", origin=(400000.0, 5700000.0), name="farpoly")
    manifest = fakedata.write_manifest(tmp_path / "near" / "poly.yaml", {
        "image": next((tmp_path / "near").glob("*_l1c.tif")).name, "lcz_polygons": polys.name,
        "lcz_attribute": "lcz"})
    with pytest.raises(UrbanMTLError, match="overlaps the image"):
        open_datasets(str(manifest), patch_size=48)
    assert near.exists()


def test_error_reference_all_nodata_and_bad_polygons(tmp_path):
    manifest = fakedata.make_scene(tmp_path, size=48, lcz=None)
    keys = __import__("yaml").safe_load(manifest.read_text())
    # Scaling percent as fraction makes every value but 0 out of range; 0 everywhere + nodata 0 = all nodata.
    all_nodata = fakedata.write_manifest(tmp_path / "alln.yaml", {**keys, "hse_nodata": [0, 80, 254]})
    with pytest.raises(UrbanMTLError, match="all nodata over the image"):
        open_datasets(str(all_nodata), patch_size=48)
    empty_lcz = fakedata.make_polygons(tmp_path, values=(0, 0), name="zero")
    with pytest.raises(UrbanMTLError, match="has an LCZ value"):
        open_datasets(str(fakedata.write_manifest(tmp_path / "z.yaml", {
            "image": keys["image"], "lcz_polygons": empty_lcz.name, "lcz_attribute": "lcz"})), patch_size=48)
    wrong = fakedata.make_polygons(tmp_path, values=("2", "river"), name="wrong")
    with pytest.raises(UrbanMTLError, match=r"not LCZ codes, e\.g\. 'river'"):
        open_datasets(str(fakedata.write_manifest(tmp_path / "w.yaml", {
            "image": keys["image"], "lcz_polygons": wrong.name, "lcz_attribute": "lcz"})), patch_size=48)
    with pytest.raises(UrbanMTLError, match=r"no attribute 'class' in any of its layers.*Its attributes: lcz"):
        open_datasets(str(fakedata.write_manifest(tmp_path / "a.yaml", {
            "image": keys["image"], "lcz_polygons": wrong.name, "lcz_attribute": "class"})), patch_size=48)


def test_error_scene_smaller_than_patch(tmp_path):
    manifest = fakedata.make_scene(tmp_path, size=40)
    with pytest.raises(UrbanMTLError, match="fewer than patch_size 48"):
        open_datasets(str(manifest), patch_size=48)


def test_hse_scale_is_guessed_from_dtype_and_values(tmp_path):
    tr = fakedata.scene_transform() * Affine.scale(2)
    grid = fakedata.scene_hse_percent(48).astype(np.float32)
    grid[grid > 100] = np.nan
    image = fakedata.make_scene(tmp_path, size=48, hse=False, lcz="codes")
    image_name = __import__("yaml").safe_load(image.read_text())["image"]
    for name, values, scale in (("fraction", grid / 100, 1.0), ("percent", grid, 0.01)):
        path = tmp_path / f"{name}.tif"
        fakedata.write_raster(path, values[None].astype(np.float32), fakedata.SCENE_CRS, tr)
        ds = _scene(fakedata.write_manifest(tmp_path / f"{name}.yaml", {"image": image_name, "hse": path.name}),
                    patch_size=48)
        assert ds.spec.hse_scale == pytest.approx(scale)
        hse = ds.read_units([(0, 0)])[1][0, ..., 0]
        np.testing.assert_allclose(hse, grid / 100, equal_nan=True, rtol=1e-6)


def test_rare_windows_are_centred_on_the_rare_classes(tmp_path):
    # The planted LCZ 2 square covers pixels 30..49 of a 160 px scene whose other classes are D and G.
    manifest = fakedata.make_scene(tmp_path, size=160, lcz="codes")
    [scene] = open_datasets(manifest, patch_size=32)
    scene.rare_share, scene.rare_classes = 1.0, (2,)
    centres = scene._rare_centres()
    assert centres and {c[3] for c in centres} == {2}
    assert all(30 <= r < 50 and 30 <= c < 50 for r, c, _, _ in centres)
    windows = scene._plan(True, np.random.default_rng(0))
    assert len(windows) == len(scene)
    assert all(r < 50 and r + 32 > 30 and c < 50 and c + 32 > 30 for r, c in windows)
    # Without rare classes in the reference (or rare_share 0) windows are drawn anywhere, as before.
    scene.rare_classes = (1,)
    scene._rare = None
    assert scene._rare_centres() == []
