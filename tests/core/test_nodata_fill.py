"""Nodata holes must not change the maps of the valid pixels next to them (core.inputs.fill, core.inputs.scene.Scene.read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from core.inputs.fill import fill_invalid
from core.network.model import ModelConfig, build_networks
from core.network.saving import base_card, save_model
from core.mapping.predict import PredictOptions, predict_scene
from core.inputs.scene import open_scene
from tests.fakedata import write_raster

SCENE = Path(__file__).resolve().parents[3] / "shared" / "data" / "scene" / "T33UUU_20170216_L1C_13band.tif"
ISLAND, CELL = 64, 128          # islands of 64 px (EuroSAT-sized) in cells of 128 px: 32 px of gap on each side


def test_fill_mirrors_a_valid_rectangle_like_symmetric_padding():
    rng = np.random.default_rng(0)
    image = rng.random((30, 34, 3)).astype(np.float32)
    valid = np.zeros((30, 34), bool)
    valid[8:22, 10:26] = True
    filled = fill_invalid(image.copy(), valid)
    expected = np.pad(image[8:22, 10:26], ((8, 8), (10, 8), (0, 0)), mode="symmetric")
    np.testing.assert_array_equal(filled, expected)


def test_fill_edge_cases():
    image = np.ones((6, 6, 2), np.float32)
    assert np.all(fill_invalid(image.copy(), np.zeros((6, 6), bool)) == 0)       # nothing valid: zeros
    untouched = np.arange(72, dtype=np.float32).reshape(6, 6, 2)
    np.testing.assert_array_equal(fill_invalid(untouched.copy(), np.ones((6, 6), bool)), untouched)
    # An irregular hole takes values of valid pixels only.
    image = np.arange(100, dtype=np.float32).reshape(10, 10, 1)
    valid = np.ones((10, 10), bool)
    valid[3:7, 2:5] = False
    valid[0, 9] = False
    out = fill_invalid(image.copy(), valid)
    assert set(out[~valid, 0].tolist()) <= set(image[valid, 0].tolist())


def _islands(tmp_path: Path) -> tuple[str, str, np.ndarray]:
    """A mosaic of 2 x 3 real 64 px islands in nodata, and the same islands each padded by mirroring."""
    with rasterio.open(SCENE) as src:
        data = src.read()
        descriptions = src.descriptions
    corners = [(300, 620), (420, 300), (100, 1000), (250, 1300), (600, 900), (500, 150)]
    islands = np.zeros((13, 2 * CELL, 3 * CELL), np.uint16)
    mirrored = np.zeros_like(islands)
    mask = np.zeros(islands.shape[1:], bool)
    pad = (CELL - ISLAND) // 2
    for k, (r, c) in enumerate(corners):
        patch = data[:, r: r + ISLAND, c: c + ISLAND]
        R, C = (k // 3) * CELL, (k % 3) * CELL
        islands[:, R + pad: R + pad + ISLAND, C + pad: C + pad + ISLAND] = patch
        mirrored[:, R: R + CELL, C: C + CELL] = np.pad(patch, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
        mask[R + pad: R + pad + ISLAND, C + pad: C + pad + ISLAND] = True
    paths = []
    for name, array in (("islands", islands), ("mirrored", mirrored)):
        path = write_raster(tmp_path / f"{name}.tif", array, nodata=0, descriptions=[d or "" for d in descriptions])
        paths.append(str(path))
    return paths[0], paths[1], mask


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> str:
    import keras

    keras.utils.set_random_seed(3)
    cfg = ModelConfig(base_width=4)
    net = build_networks(cfg)[1]
    return str(save_model(net, tmp_path_factory.mktemp("m") / "model.keras", base_card(cfg, net)))


@pytest.mark.skipif(not SCENE.exists(), reason="../shared/data is not available")
def test_islands_in_nodata_are_read_as_if_mirrored(tmp_path):
    islands, mirrored, mask = _islands(tmp_path)
    with open_scene(islands) as a, open_scene(mirrored) as b:
        for row, col, size in [(0, 0, 256), (64, 100, 128), (-16, 300, 96)]:
            img_a, valid_a = a.read(row, col, size, size)
            img_b, _ = b.read(row, col, size, size)
            np.testing.assert_array_equal(img_a, img_b)
            assert valid_a.sum() < valid_a.size


@pytest.mark.skipif(not SCENE.exists(), reason="../shared/data is not available")
@pytest.mark.parametrize("tile_size", [128, 256])
def test_islands_map_as_their_mirrored_mosaic(tmp_path, cnn, tile_size):
    """The island-versus-mirror comparison: HSE of every island pixel and LCZ of every cell inside an island
    are the same whether the gaps are nodata or mirrored data."""
    islands, mirrored, mask = _islands(tmp_path)
    maps = {}
    for name, path in (("islands", islands), ("mirrored", mirrored)):
        opts = PredictOptions(tile_size=tile_size, overlap=32, device="cpu")
        res = predict_scene(path, str(tmp_path / f"{name}_hse.tif"), str(tmp_path / f"{name}_lcz.tif"),
                            model_path=cnn, options=opts)
        with rasterio.open(res.hse_path) as h, rasterio.open(res.lcz_path) as l:  # noqa: E741
            maps[name] = (h.read(1), l.read(1))
    hse_i, lcz_i = maps["islands"]
    hse_m, lcz_m = maps["mirrored"]
    inside20 = mask[::2, ::2]
    assert np.all(hse_i[~inside20] == -1)                       # the gaps stay nodata in the outputs
    np.testing.assert_allclose(hse_i[inside20], hse_m[inside20], atol=1e-5)
    h, w = (mask.shape[0] // 10) * 10, (mask.shape[1] // 10) * 10
    full = mask[:h, :w].reshape(h // 10, 10, w // 10, 10).all(axis=(1, 3))   # cells wholly inside an island
    assert full.sum() >= 6 * 25
    np.testing.assert_array_equal(lcz_i[: h // 10, : w // 10][full], lcz_m[: h // 10, : w // 10][full])


@pytest.mark.skipif(not SCENE.exists(), reason="../shared/data is not available")
def test_zero_filled_holes_would_change_the_islands(tmp_path, monkeypatch):
    """Control: the comparison above can fail. With holes fed as zeros (the old reader) the bundled model's
    HSE of the islands differs from that of the mirrored mosaic."""
    import core.inputs.scene

    monkeypatch.setattr(core.inputs.scene, "fill_invalid", lambda image, valid: np.where(
        valid[..., None], image, np.float32(0)).astype(np.float32))
    islands, mirrored, mask = _islands(tmp_path)
    out = {}
    for name, path in (("islands", islands), ("mirrored", mirrored)):
        res = predict_scene(path, str(tmp_path / f"{name}_hse.tif"), str(tmp_path / f"{name}_lcz.tif"),
                            model_path=None, options=PredictOptions(tile_size=128, overlap=32, device="cpu"))
        with rasterio.open(res.hse_path) as h:
            out[name] = h.read(1)
    inside20 = mask[::2, ::2]
    assert np.abs(out["islands"][inside20] - out["mirrored"][inside20]).max() > 0.05
