"""Tile layouts: coverage, alignment, edge and tiny scenes, blending weights, the authors' scheme, bad settings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.common.errors import UrbanMTLError
from core.common.spec import SIZE_MULTIPLE
from core.tiling.layout import (
    Tile, batched, blend_weights, check_tiling, coverage, make_layout, ramp_profile, tile_starts,
)


@pytest.mark.parametrize("length,tile,overlap", [
    (n, t, o) for n, t, o in itertools.product(
        [1, 7, 13, 63, 64, 65, 100, 255, 256, 257, 600, 1001], [16, 24, 64, 256], [0, 4, 8, 12, 32])
    if 2 * o <= t])
def test_tile_starts_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts == sorted(set(starts))
    assert all(s % SIZE_MULTIPLE == 0 for s in starts)
    assert starts[-1] + tile >= length                       # the last pixels are inside a tile
    assert starts[-1] < max(length, 1)                       # no tile starts past the scene
    steps = np.diff(starts)
    assert np.all(steps <= tile - overlap)                   # neighbours share at least `overlap` pixels
    assert np.all(steps > 0)
    if length <= tile:
        assert starts == [0]


def test_tile_starts_are_evenly_spread():
    starts = tile_starts(1000, 256, 32)
    steps = np.diff(starts)
    assert steps.max() - steps.min() <= SIZE_MULTIPLE


@pytest.mark.parametrize("height,width", [(13, 7), (1, 1), (64, 64), (100, 37), (300, 513), (129, 250)])
@pytest.mark.parametrize("scheme", ["blend", "authors"])
def test_every_pixel_is_covered(height, width, scheme):
    layout = make_layout(height, width, tile_size=64, overlap=16, scheme=scheme)
    cov = coverage(layout)
    assert cov.shape == ((height + 1) // 2, (width + 1) // 2)
    if scheme == "blend":
        assert cov.min() >= 1
        assert cov.max() <= 4                                 # at most two tiles along each axis
    else:
        assert np.all(cov == 4)                               # one prediction from each of the 4 grids
    for t in layout.tiles:
        assert t.row % 2 == 0 and t.col % 2 == 0              # outputs fall on the 20 m grid
        assert (t.height, t.width) == (layout.tile_height, layout.tile_width)
        assert t.height % SIZE_MULTIPLE == 0 and t.width % SIZE_MULTIPLE == 0
    assert [(t.row, t.col) for t in layout.tiles] == sorted((t.row, t.col) for t in layout.tiles)


def test_tiny_odd_scene_is_one_small_tile():
    layout = make_layout(13, 7, tile_size=256, overlap=32)
    assert layout.tiles == (Tile(0, 0, 16, 16),)
    assert (layout.output_height, layout.output_width) == (7, 4)


def test_scene_smaller_than_tile_in_one_axis_only():
    layout = make_layout(40, 1000, tile_size=256, overlap=32)
    assert layout.tile_height == 40 and layout.tile_width == 256
    assert {t.row for t in layout.tiles} == {0}
    assert coverage(layout).min() >= 1


def test_ramp_profiles_of_neighbours_sum_to_one():
    n, ramp = 64, 8
    p = ramp_profile(n, ramp)
    assert p.min() > 0 and p.max() == 1.0
    assert np.all(p[ramp:n - ramp] == 1.0)
    # A tile ending where its neighbour's ramp starts: the two ramps overlap by `ramp` samples.
    np.testing.assert_allclose(p[n - ramp:] + p[:ramp], 1.0, atol=1e-6)
    assert np.all(np.diff(p[:ramp]) > 0)                      # rises smoothly, no step


def test_blend_weights_shape_and_symmetry():
    w = blend_weights(32, 24, 4)
    assert w.shape == (32, 24) and w.dtype == np.float32
    np.testing.assert_array_equal(w, w[::-1, ::-1])
    assert w.min() > 0
    assert np.all(ramp_profile(10, 0) == 1)                   # overlap 0: a hard cut


def test_normalised_weights_sum_to_one_everywhere():
    layout = make_layout(300, 200, tile_size=64, overlap=16)
    total = coverage(layout, weighted=True)
    assert total.min() > 0
    # Each tile's share (weight / total) summed over the tiles is one at every pixel.
    share = np.zeros_like(total)
    for t in layout.tiles:
        r, c = t.row // 2, t.col // 2
        h = min(layout.weights.shape[0], total.shape[0] - r)
        w = min(layout.weights.shape[1], total.shape[1] - c)
        share[r:r + h, c:c + w] += layout.weights[:h, :w] / total[r:r + h, c:c + w]
    np.testing.assert_allclose(share, 1.0, rtol=1e-6)


def test_interior_pixels_blend_two_tiles_smoothly():
    layout = make_layout(64, 1000, tile_size=64, overlap=16)
    middle_row = coverage(layout, weighted=True)[16]
    # Away from the scene's left and right edges (one tile only there), overlapping raised cosines sum to
    # about one: every pixel has a tile whose core or near-core covers it, none rests on edge weights only.
    interior = middle_row[8:-8]
    assert 0.5 < interior.min() and interior.max() <= 2.0


def test_authors_offsets_are_quarter_tiles_along_the_diagonal():
    layout = make_layout(500, 500, tile_size=64, overlap=0, scheme="authors")
    assert {(t.row % 64, t.col % 64) for t in layout.tiles} == {(0, 0), (16, 16), (32, 32), (48, 48)}
    assert np.all(layout.weights == 1)
    assert min(t.row for t in layout.tiles) < 0               # shifted grids reach past the top edge


@pytest.mark.parametrize("tile_size,overlap", [(250, 32), (8, 0), (0, 0), (256, 129), (256, -1), (64, 33)])
def test_bad_settings_are_refused(tile_size, overlap):
    with pytest.raises(UrbanMTLError):
        check_tiling(tile_size, overlap)
    with pytest.raises(UrbanMTLError):
        make_layout(100, 100, tile_size, overlap)


def test_unknown_scheme_and_batch_size():
    with pytest.raises(UrbanMTLError, match="scheme"):
        check_tiling(256, 32, "mosaic")
    with pytest.raises(UrbanMTLError, match="batch_size"):
        batched([Tile(0, 0, 16, 16)], 0)
    groups = batched([Tile(0, 8 * i, 16, 16) for i in range(5)], 2)
    assert [len(g) for g in groups] == [2, 2, 1]


# --- the model's own tiling ---


def test_model_tiling_follows_the_attention_and_the_training_window_of_the_card():
    from core.tiling import attention_window, model_tiling
    from core.tiling.layout import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, WINDOWED_OVERLAP, WINDOWED_TILE_SIZE

    card = {"training": {"config": {"patch_size": 64}}}
    # Windowed attention (the default where the card gives the training window): large tiles, the same map.
    assert attention_window(card) == 32 and model_tiling(card) == (WINDOWED_TILE_SIZE, WINDOWED_OVERLAP)
    assert attention_window({"attention_window": 20, **card}) == 20
    assert attention_window({"config": {"variant": "mtl_no_cbam"}, **card}) is None
    assert model_tiling({"training": {"config": {"patch_size": 64, "label_margin": 48}}}) == (WINDOWED_TILE_SIZE, 96)
    # Attention over each tile: tiles of the training window, overlapping by a quarter of it.
    assert model_tiling(card, windowed=False) == (64, 16)
    assert model_tiling({"training": {"config": {"patch_size": 128}}}, windowed=False) == (128, 32)
    assert model_tiling({"training": {"config": {"patch_size": 40}}}, windowed=False) == (40, 8)   # 10 -> 8
    assert model_tiling({"tiling": {"tile_size": 96, "overlap": 24}, **card}) == (96, 24)   # an explicit entry wins
    # A label margin (losses left out at the window edge): tiles overlap by twice it, at most half a tile.
    assert model_tiling({"training": {"config": {"patch_size": 64, "label_margin": 16}}}, windowed=False) == (64, 32)
    assert model_tiling({"training": {"config": {"patch_size": 64, "label_margin": 4}}}, windowed=False) == (64, 16)
    assert model_tiling({"training": {"config": {"patch_size": 64, "label_margin": 24}}}, windowed=False) == (64, 32)
    for card in ({}, {"training": {}}, {"training": {"config": {"patch_size": 12}}}, None):
        assert attention_window(card) is None and model_tiling(card) == (DEFAULT_TILE_SIZE, DEFAULT_OVERLAP)


def test_the_bundled_model_maps_with_its_64_px_training_window_as_the_attention_window():
    import json

    from core.mapping.predict import PredictOptions, resolve_tiling, window_of
    from core.network.files import DEFAULT_MODEL_PATH, card_path_for
    from core.tiling.layout import WINDOWED_OVERLAP, WINDOWED_TILE_SIZE

    card = json.loads(card_path_for(DEFAULT_MODEL_PATH).read_text())
    resolved = resolve_tiling(PredictOptions(), card)
    assert window_of(resolved, card) == 32
    assert (resolved.tile_size, resolved.overlap) == (WINDOWED_TILE_SIZE, WINDOWED_OVERLAP)
    per_tile = resolve_tiling(PredictOptions(attention="tile"), card)
    assert window_of(per_tile, card) is None and (per_tile.tile_size, per_tile.overlap) == (64, 16)
    assert resolve_tiling(PredictOptions(tile_size=256, attention="tile"), card).overlap == 16
    assert resolve_tiling(PredictOptions(tile_size=16, attention="tile"), card).overlap == 8   # half a small tile
    with pytest.raises(UrbanMTLError, match="overlap must be between 0 and half the tile size"):
        resolve_tiling(PredictOptions(overlap=40, tile_size=64), card)


def test_the_batch_size_left_open_follows_the_tile_size():
    """One 512 px tile per call at the default tiling (a batch of 4 took the run past 1.4 GB), as many small
    tiles as make the same pixels; a batch size the caller gives is kept."""
    from core.common.spec import BATCH_PIXELS, default_batch_size
    from core.mapping.predict import PredictOptions, resolve_tiling

    assert (default_batch_size(512), default_batch_size(256), default_batch_size(64)) == (1, 4, 64)
    assert default_batch_size(1024) == 1 and default_batch_size(16) * 16 * 16 == BATCH_PIXELS
    card = {"training": {"config": {"patch_size": 64}}}
    assert resolve_tiling(PredictOptions(), card).batch_size == 1
    assert resolve_tiling(PredictOptions(attention="tile"), card).batch_size == 64
    assert resolve_tiling(PredictOptions(batch_size=3), card).batch_size == 3
