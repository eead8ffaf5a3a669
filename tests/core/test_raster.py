"""Opening inputs: band mapping for every layout, DN offsets, nodata, windows, warping, SAFE products, band files."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from core.common.bands import LAYOUTS, MODEL_BANDS, layout_of_13_bands
from core.common.errors import UrbanMTLError
from core.inputs.grid import utm_crs_for
from core.inputs.scene import open_scene
from tests.fakedata import fake_safe, write_raster, zip_safe

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
SCENE_TIF = SHARED / "data" / "scene" / "T33UUU_20170216_L1C_13band.tif"
JP2_DIR = SHARED / "data" / "scene" / "IMG_DATA"
EUROSAT_H5 = SHARED / "data" / "eurosat" / "eurosat_s2_teacher.h5"
L1C = LAYOUTS["L1C"]


def band_value(name: str) -> int:
    """A DN that identifies a band: 1000 + 100 * its position in the ESA order."""
    return 1000 + 100 * L1C.index(name)


def layout_stack(names: Sequence[str], height: int = 12, width: int = 16) -> np.ndarray:
    return np.stack([np.full((height, width), band_value(n), np.uint16) for n in names])


def expected_reflectance(offset: float = 0.0) -> np.ndarray:
    return np.array([(band_value(b) + offset) / 10000 for b in MODEL_BANDS], np.float32)


def read_center(source, **kwargs) -> tuple[np.ndarray, object]:
    with open_scene(source, **kwargs) as scene:
        image, valid = scene.read(0, 0, scene.height, scene.width)
        assert valid.all()
        return image[scene.height // 2, scene.width // 2], scene


@pytest.mark.parametrize("layout", ["L1C", "L2A", "MODEL"])
def test_layouts_by_band_count(tmp_path, layout):
    path = write_raster(tmp_path / "s.tif", layout_stack(LAYOUTS[layout]))
    pixel, _ = read_center(path)
    np.testing.assert_allclose(pixel, expected_reflectance(), rtol=1e-6)


def test_eurosat_layout_by_name_or_by_its_dark_cirrus_band(tmp_path):
    path = write_raster(tmp_path / "eurosat.tif", layout_stack(LAYOUTS["EUROSAT"]))
    pixel, _ = read_center(path, bands=list(LAYOUTS["EUROSAT"]))
    np.testing.assert_allclose(pixel, expected_reflectance(), rtol=1e-6)
    # Unnamed, with no band darker than the others, a 13-band file is read as L1C (B8A from B9's position).
    wrong, scene = read_center(path)
    assert not np.allclose(wrong, expected_reflectance())
    assert any("Level-1C order" in m for m in scene.messages)
    # As in real data, B10 (cirrus) far darker than B11: band 10 is B10, so the file is in the EuroSAT order.
    data = layout_stack(LAYOUTS["EUROSAT"])
    data[LAYOUTS["EUROSAT"].index("B10")] = 12
    path = write_raster(tmp_path / "eurosat_real.tif", data)
    pixel, scene = read_center(path)
    np.testing.assert_allclose(pixel, expected_reflectance(), rtol=1e-6)
    assert any("EuroSAT order" in m for m in scene.messages)
    # The same dark B10 in the L1C order stays L1C.
    data = layout_stack(L1C)
    data[L1C.index("B10")] = 12
    pixel, _ = read_center(write_raster(tmp_path / "l1c_real.tif", data))
    np.testing.assert_allclose(pixel, expected_reflectance(), rtol=1e-6)


@pytest.mark.skipif(not EUROSAT_H5.exists(), reason="../shared/data is not available")
def test_real_eurosat_patches_and_scene_crops_get_their_13_band_order():
    import h5py

    with h5py.File(EUROSAT_H5) as f:
        patches = f["x"][:]
    assert [layout_of_13_bands(np.median(p.reshape(-1, 13), axis=0))[0] for p in patches] == ["EUROSAT"] * len(patches)
    with rasterio.open(SCENE_TIF) as src:
        scene = src.read()
    crops = [scene[:, r:r + 64, c:c + 64] for r in range(0, 704, 64) for c in range(0, 1472, 64)]
    assert {layout_of_13_bands(np.median(c.reshape(13, -1), axis=1))[0] for c in crops} == {"L1C"}


def test_band_descriptions_in_any_order(tmp_path):
    order = ["B12", "B8A", "B2", "B4", "B3", "B11", "B5", "B8", "B7", "B6", "B1"]
    path = write_raster(tmp_path / "named.tif", layout_stack(order), descriptions=["B12", "B8a", "B02", "b4",
                        "B3", "B11, central wavelength 1610 nm", "B5", "B08", "B7", "B6", "B1"])
    pixel, scene = read_center(path)
    np.testing.assert_allclose(pixel, expected_reflectance(), rtol=1e-6)
    assert any("band mapping" in m for m in scene.messages)


@pytest.mark.parametrize("count", [1, 3, 4])
def test_rgb_and_single_band_rasters_are_refused(tmp_path, count):
    path = write_raster(tmp_path / "rgb.tif", np.ones((count, 8, 8), np.uint8))
    with pytest.raises(UrbanMTLError, match=rf"{count} band\(s\)"):
        with open_scene(path):
            pass


def test_wrong_explicit_band_names(tmp_path):
    path = write_raster(tmp_path / "s.tif", layout_stack(L1C))
    with pytest.raises(UrbanMTLError, match="13 bands"):
        with open_scene(path, bands=["B2", "B3"]):
            pass


def test_raster_without_crs_is_refused(tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", layout_stack(L1C), crs=None)
    with pytest.raises(UrbanMTLError, match="no coordinate reference system"):
        with open_scene(path):
            pass


def test_missing_and_unreadable_inputs(tmp_path):
    with pytest.raises(UrbanMTLError, match="does not exist"):
        with open_scene(tmp_path / "nothing.tif"):
            pass
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a raster")
    with pytest.raises(UrbanMTLError, match="cannot read"):
        with open_scene(bad):
            pass
    with pytest.raises(UrbanMTLError, match="neither a Sentinel-2 SAFE"):
        with open_scene(tmp_path):
            pass


# --- DN offsets ---


@pytest.mark.parametrize("tags,band_tags,name,offset", [
    ({"PROCESSING_BASELINE": "04.00"}, None, "s.tif", -1000),
    ({"PROCESSING_BASELINE": "05.09"}, None, "s.tif", -1000),
    ({"PROCESSING_BASELINE": "02.09"}, None, "s.tif", 0),
    ({"RADIO_ADD_OFFSET": "-1000"}, None, "s.tif", -1000),
    (None, {i: {"BOA_ADD_OFFSET": "-1000"} for i in range(1, 14)}, "s.tif", -1000),
    (None, None, "S2B_MSIL2A_20230823T095559_N0509_R122_T34UCF_20230823T124759.tif", -1000),
    (None, None, "S2A_MSIL1C_20170216T102101_N0204_R065_T33UUU_20170216T102204.tif", 0),
    (None, None, "plain.tif", 0),
])
def test_processing_baseline_offsets(tmp_path, tags, band_tags, name, offset):
    path = write_raster(tmp_path / name, layout_stack(L1C), tags=tags, band_tags=band_tags)
    pixel, scene = read_center(path)
    np.testing.assert_allclose(pixel, expected_reflectance(offset), rtol=1e-6)
    assert np.all(scene.offsets == offset)
    if offset:
        assert any("offset" in m and "-1000" in m for m in scene.messages)


def test_explicit_offset_wins(tmp_path):
    path = write_raster(tmp_path / "s.tif", layout_stack(L1C), tags={"PROCESSING_BASELINE": "04.00"})
    pixel, _ = read_center(path, offset=0.0)
    np.testing.assert_allclose(pixel, expected_reflectance(0), rtol=1e-6)


def test_float_reflectance_is_used_as_is(tmp_path):
    data = (layout_stack(L1C).astype(np.float32) / 10000)
    path = write_raster(tmp_path / "refl.tif", data)
    pixel, scene = read_center(path)
    np.testing.assert_allclose(pixel, expected_reflectance(), rtol=1e-6)
    assert any("reflectance already" in m for m in scene.messages)


# --- nodata, windows, padding ---


def test_nodata_rules(tmp_path):
    data = layout_stack(L1C, 10, 10)
    data[:, 0, 0] = 0                      # all bands 0
    data[5, 1, 1] = 65535                  # one model band (B5) at the declared nodata value
    data[0, 2, 2] = 65535                  # B1 is not a model band: still valid
    path = write_raster(tmp_path / "nd.tif", data, nodata=65535)
    with open_scene(path) as scene:
        image, valid = scene.read(0, 0, 10, 10)
    assert not valid[0, 0] and not valid[1, 1] and valid[2, 2]
    assert valid.sum() == 98
    # Filled from the valid pixels they mirror (core.inputs.fill), never fed to the network as 0.
    np.testing.assert_array_equal(image[0, 0], image[1, 0])   # (0,0)'s nearest valid (1,0)... its mirror
    np.testing.assert_array_equal(image[1, 1], image[1, 2])
    assert np.all(image[~valid] > 0)


def test_read_outside_the_raster_mirrors_and_marks_invalid(tmp_path):
    data = np.stack([np.arange(40, dtype=np.uint16).reshape(5, 8) + 1 + 100 * k for k in range(13)])
    path = write_raster(tmp_path / "m.tif", data)
    with open_scene(path) as scene:
        image, valid = scene.read(-2, -3, 9, 14)
    assert image.shape == (9, 14, 10) and valid.shape == (9, 14)
    assert valid[2:7, 3:11].all() and valid.sum() == 40
    b2 = image[..., 0] * 10000 - 100                          # model band 0 is B2 = file band 2
    np.testing.assert_allclose(b2[2:7, 3:11], np.arange(40).reshape(5, 8) + 1, atol=1e-3)
    np.testing.assert_allclose(b2[0:2, 3:11], b2[3:1:-1, 3:11])    # symmetric padding above
    np.testing.assert_allclose(b2[2:7, 0:3], b2[2:7, 5:2:-1])       # and on the left


def test_extent_window_and_errors(tmp_path):
    path = write_raster(tmp_path / "s.tif", layout_stack(L1C, 100, 200))
    with open_scene(path, extent=(330105, 5821495, 330500, 5821900)) as scene:
        assert (scene.height, scene.width) == (41, 40)       # whole pixels covering the extent
        assert scene.transform.c == 330100 and scene.transform.f == 5821900
    with open_scene(path, extent=(329000, 5821000, 330500, 5823000)) as scene:
        assert any("clipped" in m for m in scene.messages)
        assert scene.transform.c == 330000 and scene.transform.f == 5822040
    with pytest.raises(UrbanMTLError, match="lies outside"):
        with open_scene(path, extent=(400000, 5000000, 400100, 5000100)):
            pass
    with pytest.raises(UrbanMTLError, match="inverted"):
        with open_scene(path, extent=(330500, 5821000, 330100, 5821500)):
            pass
    # The same area given in longitude/latitude.
    with open_scene(path, extent=(12.4990, 52.5160, 12.5020, 52.5250), extent_crs="EPSG:4326") as scene:
        assert 0 < scene.height <= 100 and 0 < scene.width <= 200


def test_geographic_input_is_warped_to_utm(tmp_path):
    data = layout_stack(L1C, 40, 60)
    path = write_raster(tmp_path / "geo.tif", data, crs="EPSG:4326",
                        transform=from_origin(12.50, 52.52, 0.0002, 0.0001))
    with open_scene(path) as scene:
        assert scene.warped
        assert scene.crs.to_epsg() == 32633
        assert scene.transform.a == pytest.approx(10) and scene.transform.e == pytest.approx(-10)
        assert scene.transform.c % 10 == 0
        assert any("warping" in m and "EPSG:32633" in m for m in scene.messages)
        image, valid = scene.read(0, 0, scene.height, scene.width)
    assert valid.mean() > 0.5                                 # the footprint, rotated into UTM
    np.testing.assert_allclose(image[valid].mean(axis=0), expected_reflectance(), rtol=1e-3)


def test_20m_input_is_warped_to_10m(tmp_path):
    path = write_raster(tmp_path / "s20.tif", layout_stack(L1C, 10, 10),
                        transform=from_origin(330000, 5822040, 20, 20))
    with open_scene(path) as scene:
        assert scene.warped and (scene.height, scene.width) == (20, 20)


def test_utm_zone_choice():
    assert utm_crs_for(12.6, 52.5).to_epsg() == 32633
    assert utm_crs_for(-58.4, -34.6).to_epsg() == 32721


def test_all_nodata_scene_has_no_valid_pixels(tmp_path):
    path = write_raster(tmp_path / "empty.tif", np.zeros((13, 30, 30), np.uint16))
    with open_scene(path) as scene:
        assert not scene.has_valid_pixels()
    data = np.zeros((13, 700, 700), np.uint16)
    data[:, 333, 333] = 500                                    # one pixel a decimated look would miss
    path = write_raster(tmp_path / "speck.tif", data)
    with open_scene(path) as scene:
        assert scene.has_valid_pixels()


# --- stacks of single-band files ---


def write_band_files(folder: Path, names: Sequence[str], prefix: str = "T33UUU_20220301T101101_") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        res = {"B2": 10, "B3": 10, "B4": 10, "B8": 10, "B1": 60, "B9": 60, "B10": 60}.get(name, 20)
        size = 120 // res
        label = "B8A" if name == "B8A" else f"B{int(name[1:]):02d}"
        data = np.full((1, size, size), band_value(name), np.uint16)
        paths.append(write_raster(folder / f"{prefix}{label}.tif", data,
                                  transform=from_origin(330000, 5822040, res, res)))
    return paths


def test_band_files_folder_glob_and_list(tmp_path):
    paths = write_band_files(tmp_path / "IMG_DATA", L1C)
    for source in (tmp_path / "IMG_DATA", str(tmp_path / "IMG_DATA" / "*_B??.tif"), [str(p) for p in paths]):
        pixel, scene = read_center(source)
        assert (scene.height, scene.width) == (12, 12)
        np.testing.assert_allclose(pixel, expected_reflectance(), rtol=1e-6)


def test_band_files_missing_a_band(tmp_path):
    write_band_files(tmp_path / "IMG_DATA", [b for b in L1C if b != "B11"])
    with pytest.raises(UrbanMTLError, match="lack B11"):
        with open_scene(tmp_path / "IMG_DATA"):
            pass


def test_band_files_of_different_areas(tmp_path):
    paths = write_band_files(tmp_path / "a", L1C)
    shifted = write_raster(tmp_path / "a" / "T33UUU_20220301T101101_B05.tif", np.ones((1, 6, 6), np.uint16),
                           transform=from_origin(331000, 5822040, 20, 20))
    assert shifted in paths
    with pytest.raises(UrbanMTLError, match="does not cover the same area"):
        with open_scene(tmp_path / "a"):
            pass


# --- the real sample scene (skipped without ../shared) ---


needs_scene = pytest.mark.skipif(not SCENE_TIF.exists() or not JP2_DIR.exists(), reason="../shared data absent")


@needs_scene
def test_jp2_band_files_match_the_13_band_stack():
    extent = (333000, 5816000, 334500, 5817200)
    with open_scene(SCENE_TIF, extent=extent) as tif, open_scene(JP2_DIR, extent=extent) as jp2:
        assert (tif.height, tif.width) == (jp2.height, jp2.width) == (120, 150)
        assert tif.transform == jp2.transform
        a, va = tif.read(-8, -8, 136, 166)
        b, vb = jp2.read(-8, -8, 136, 166)
    assert va.all() and vb.all()
    # 10 m bands are copied unchanged; the stack's 20 m bands were resampled bilinearly by GDAL as well.
    ten_m = [MODEL_BANDS.index(b) for b in ("B2", "B3", "B4", "B8")]
    np.testing.assert_array_equal(a[..., ten_m], b[..., ten_m])
    assert np.abs(a - b).max() <= 2e-4


def make_fake_safe(root: Path, baseline: str = "04.00", offset: int = -1000) -> Path:
    return fake_safe(root, JP2_DIR, baseline, offset)


@needs_scene
def test_safe_folder_zip_and_granule_folder_apply_the_baseline_offset(tmp_path):
    safe = make_fake_safe(tmp_path)
    archive = tmp_path / (safe.stem + ".zip")
    with zipfile.ZipFile(archive, "w") as zf:
        for f in safe.rglob("*"):
            if f.is_file():
                zf.write(f.resolve(), f.relative_to(tmp_path).as_posix())
    extent = (333000, 5816000, 334000, 5816800)
    with open_scene(SCENE_TIF, extent=extent) as tif:
        reference, _ = tif.read(0, 0, tif.height, tif.width)
    granule_imgs = next((safe / "GRANULE").iterdir()) / "IMG_DATA"
    for source in (safe, safe / "MTD_MSIL1C.xml", archive, granule_imgs):
        with open_scene(source, extent=extent) as scene:
            assert np.all(scene.offsets == -1000)
            assert any("-1000" in m for m in scene.messages)
            image, valid = scene.read(0, 0, scene.height, scene.width)
        assert valid.all()
        np.testing.assert_allclose(image, reference - 0.1, atol=2e-4)    # (DN - 1000) / 10000


@needs_scene
def test_safe_before_baseline_4_has_no_offset(tmp_path):
    safe = make_fake_safe(tmp_path, baseline="02.04", offset=0)
    with open_scene(safe, extent=(333000, 5816000, 333200, 5816200)) as scene:
        assert np.all(scene.offsets == 0)


@needs_scene
def test_a_product_named_the_qgis_way_reads_as_its_safe_folder(tmp_path):
    """The names QGIS gives a product (a SENTINEL2 subdataset of any resolution, /vsizip/ into the .zip, both
    together): each reads the product's 10 bands with the baseline offset, as the .SAFE folder does; a 10 m
    subdataset carries 4 bands, and that is not taken for the input."""
    safe = make_fake_safe(tmp_path)
    archive = zip_safe(safe)
    xml = safe / "MTD_MSIL1C.xml"
    inner = f"/vsizip/{archive}/{safe.name}/MTD_MSIL1C.xml"
    names = [f"SENTINEL2_L1C:{xml}:{res}:EPSG_32633" for res in ("10m", "20m", "60m", "TCI")]
    names += [inner, f"/vsizip/{archive}/{safe.name}", f"SENTINEL2_L1C:{inner}:10m:EPSG_32633"]
    extent = (333000, 5816000, 334000, 5816800)
    with open_scene(safe, extent=extent) as scene:
        reference, _ = scene.read(0, 0, scene.height, scene.width)
    for name in names:
        with open_scene(name, extent=extent) as scene:
            assert np.all(scene.offsets == -1000), name
            image, valid = scene.read(0, 0, scene.height, scene.width)
        assert valid.all() and image.shape[-1] == 10, name
        np.testing.assert_array_equal(image, reference)


def test_a_product_name_whose_file_is_gone_is_one_sentence(tmp_path):
    gone = tmp_path / "S2B_MSIL1C_x.SAFE" / "MTD_MSIL1C.xml"
    with pytest.raises(UrbanMTLError, match=r"Sentinel-2 subdataset of .*MTD_MSIL1C.xml', which does not exist"):
        open_scene(f"SENTINEL2_L1C:{gone}:10m:EPSG_32633").__enter__()
    with pytest.raises(UrbanMTLError, match=r"lies in the archive .*S2B_MSIL1C_x.zip', which does not exist"):
        open_scene(f"/vsizip/{tmp_path / 'S2B_MSIL1C_x.zip'}/S2B_MSIL1C_x.SAFE/MTD_MSIL1C.xml").__enter__()


def test_qgis_names_are_parsed_on_every_platform():
    from core.common.product_names import SUBDATASET_RE, VSIZIP_RE, is_product_name, product_label

    m = SUBDATASET_RE.match(r"SENTINEL2_L2A:C:\data\S2A.SAFE\MTD_MSIL2A.xml:20m:EPSG_32631")
    assert m.group("product") == r"C:\data\S2A.SAFE\MTD_MSIL2A.xml" and m.group("res") == "20m"
    m = SUBDATASET_RE.match('SENTINEL2_L1C:"/d/x y/MTD_MSIL1C.xml":10m:EPSG_32633')
    assert m.group("product") == "/d/x y/MTD_MSIL1C.xml"
    m = VSIZIP_RE.match("/vsizip//C:/Users/me/S2B.zip/S2B.SAFE/MTD_MSIL1C.xml")
    assert m.group("archive") == "C:/Users/me/S2B.zip" and m.group("member") == "S2B.SAFE/MTD_MSIL1C.xml"
    for name in (r"C:\d\S2A_MSIL1C_20220301T101101_N0400_R022_T33UUU_20220301T120000.SAFE",
                 "/d/S2B_MSIL2A_20230101T000000_N0509_R001_T31TEJ_20230101T000000.zip", "/d/x.SAFE/MTD_MSIL2A.xml",
                 "SENTINEL2_L1C:/d/x.SAFE/MTD_MSIL1C.xml:10m:EPSG_32633", "/vsizip//d/S2A.zip/S2A.SAFE"):
        assert is_product_name(name), name
    assert not is_product_name("/d/scene.tif") and not is_product_name("/d/folder")
    assert product_label("SENTINEL2_L1C:/vsizip//d/S2B_X.zip/S2B_X.SAFE/MTD_MSIL1C.xml:10m:EPSG_32633") == "S2B_X"
