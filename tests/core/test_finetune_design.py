"""How fine-tuning follows the training areas: what the polygons say of the start model's classes (the
distillation's translation), the random forest peer, the class-balanced windows, the frozen layers and the
warning for classes the map still gets wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine

from core.evaluation.accuracy import bootstrap_ranges, polygon_confusions
from core.common.bands import MODEL_BANDS
from core.data.windows import class_weights
from core.finetuning.run import disagreeing_classes
from core.finetuning.setup import remap_matrix
from core.finetuning.forest import cell_features, polygon_cells, predict_codes, train_forest
from core.training.transfer import distill_matrices, freeze_layers
from core.finetuning.areas import TrainingArea
from tests import fakedata

UTM = "EPSG:32633"
#: A 10 x 10 grid of 100 m cells, upper-left corner (0, 1000).
GRID = Affine(100, 0, 0, 0, -100, 1000)


def _cells(row: int, col: int, rows: int = 1, cols: int = 1) -> tuple[float, float, float, float]:
    """Bounds of a block of cells of GRID (x0, y0, x1, y1), a metre inside its edges."""
    return (col * 100 + 1, 1000 - (row + rows) * 100 + 1, (col + cols) * 100 - 1, 1000 - row * 100 - 1)


def _area(code: int, index: int, bounds) -> TrainingArea:
    x0, y0, x1, y1 = bounds
    ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return TrainingArea(code, {"type": "Polygon", "coordinates": [ring]}, bounds, f"feature {index}", index)


def _map(tmp_path, codes: np.ndarray, name: str = "start.tif"):
    path = tmp_path / name
    fakedata.write_raster(path, codes[None].astype(np.uint8), UTM, GRID, nodata=0)
    return str(path)


def test_remap_translates_contradicted_classes_and_keeps_the_others(tmp_path):
    start = np.full((10, 10), 14, np.uint8)
    start[0:2, 0:5] = 5            # the start model's 5 where the user draws 2: 10 cells, all contradicted
    start[2, 0:4] = 2              # its 2 where the user draws 2 (3 cells) and 6 (1 cell): mostly right
    start[3, 0:2] = 8              # its 8 inside a polygon of 6: a class the user drew, contradicted
    start[3, 2:5] = 6              # its 6 inside the same polygon of 6: 3 of 5
    areas = [_area(2, 0, _cells(0, 0, 2, 5)), _area(2, 1, _cells(2, 0, 1, 3)), _area(6, 2, _cells(2, 3, 1, 1)),
             _area(6, 3, _cells(3, 0, 1, 5))]
    m, agreement = remap_matrix(_map(tmp_path, start), areas, prior=10.0)
    assert agreement == pytest.approx(6 / 19)      # 3 cells of 2 and 3 of 6 among the 19 inside polygons
    assert m.shape == (17, 17) and np.allclose(m.sum(axis=1), 1.0)
    # 5 was never drawn: its 10 contradicting cells against a prior of 10 move half of it to 2.
    assert m[4, 1] == pytest.approx(0.5) and m[4, 4] == pytest.approx(0.5)
    # 2 was drawn and the start model is right on 3 of its 4 polygon cells: it stays 2.
    assert m[1, 1] == 1.0
    # 8 was not drawn: 2 cells against a prior of 10 move 1/6 of it to 6.
    assert m[7, 5] == pytest.approx(2 / 12) and m[7, 7] == pytest.approx(10 / 12)
    # 6 was drawn and the start model's 6 is right where it says 6: stays. D, never inside a polygon: stays.
    assert m[5, 5] == 1.0 and m[13, 13] == 1.0


def test_remap_of_a_drawn_class_the_user_calls_otherwise_in_most_cells(tmp_path):
    start = np.full((10, 10), 14, np.uint8)
    start[0:2, 0:6] = 4            # the start model's 4: 8 cells the user calls 2, 4 the user calls 4
    areas = [_area(2, 0, _cells(0, 0, 2, 4)), _area(4, 1, _cells(0, 4, 2, 2)), _area(4, 2, _cells(5, 5))]
    m, agreement = remap_matrix(_map(tmp_path, start), areas)
    assert agreement == pytest.approx(4 / 13)
    assert m[3, 1] == pytest.approx(8 / 12) and m[3, 3] == pytest.approx(4 / 12)
    # With fewer than REMAP_MIN_CELLS cells (here 4: 3 against, 1 for), a class the user drew stays.
    start[1] = 14
    start[0, 4:6] = 14
    m, _ = remap_matrix(_map(tmp_path, start, "few.tif"), areas)
    assert m[3, 3] == 1.0


def test_distill_map_lumps_the_user_classes_after_the_translation(tmp_path):
    matrix = np.eye(17)
    matrix[4] = 0.0
    matrix[4, 1] = 1.0             # 5 -> 2
    path = tmp_path / "distill.json"
    path.write_text(json.dumps({"matrix": matrix.tolist(), "lump": [2, 3], "confirmed": 0.5}))
    (translate, group, alone), confirmed = distill_matrices(str(path))
    assert translate.shape == group.shape == alone.shape == (17, 17) and confirmed == 0.5
    assert not translate[:, 16:].any() and np.array_equal(alone, matrix)      # 16 groups, padded to 17
    p = np.zeros(17)
    p[[1, 2, 4, 13]] = [0.2, 0.1, 0.3, 0.4]       # 2, 3, 5, D
    # The start model's 5 joins 2 and 3 in one group; D stays on its own; the network's own 5 stays 5.
    # Columns: the 15 classes not lumped (1, 4, 5, ..., 17: 5 is column 2, D column 11), then the lumped group
    # (column 15) and a zero column.
    assert (p @ translate)[15] == pytest.approx(0.6) and (p @ translate)[11] == pytest.approx(0.4)
    assert (p @ translate)[2] == 0.0
    assert (p @ group)[15] == pytest.approx(0.3) and (p @ group)[2] == pytest.approx(0.3)


def test_the_split_among_the_users_classes_is_held_as_far_as_the_polygons_confirm_the_start_model():
    from core.finetuning.setup import confirmed_weight

    assert confirmed_weight(0.5) == confirmed_weight(0.7) == 0.0        # the polygons teach
    assert confirmed_weight(0.8) == pytest.approx(1.0) and confirmed_weight(0.9) == pytest.approx(4.0)
    assert confirmed_weight(1.0) == pytest.approx(60.0)                 # bounded: 0.3 / 0.01 x 2


def test_class_weights_draw_every_class_equally_often():
    centres = [(0.0, 0.0, 0, 2)] * 6 + [(0.0, 0.0, 0, 14)] * 2 + [(0.0, 0.0, 0, 17)]
    w = class_weights(centres)
    assert w.sum() == pytest.approx(1.0)
    assert [w[:6].sum(), w[6:8].sum(), w[8]] == pytest.approx([1 / 3] * 3)
    assert class_weights(centres, 0.0) == pytest.approx(np.full(9, 1 / 9))
    half = class_weights(centres, 0.5)          # classes in proportion to the square root of their polygons
    assert [half[:6].sum(), half[6:8].sum(), half[8]] == pytest.approx(np.sqrt([6, 2, 1]) / np.sqrt([6, 2, 1]).sum())


def test_warning_names_the_class_whose_polygons_the_map_calls_otherwise(tmp_path):
    mapped = np.full((10, 10), 2, np.uint8)
    mapped[5:7, 0:6] = 14          # the three D polygons: two mapped D, the third 2
    areas = [_area(2, 0, _cells(0, 0, 2, 2)), _area(2, 1, _cells(0, 4, 2, 2)),
             _area(14, 2, _cells(5, 0, 2, 2)), _area(14, 3, _cells(5, 2, 2, 2)), _area(14, 4, _cells(8, 8, 2, 2)),
             _area(17, 5, _cells(2, 6, 2, 2)), _area(17, 6, _cells(2, 8, 2, 2))]
    warnings = disagreeing_classes(areas, _map(tmp_path, mapped))
    assert len(warnings) == 1 and "2 of your 2 training polygon(s) of class G Water" in warnings[0]
    assert "--distill" in warnings[0]


def test_bootstrap_ranges_hold_the_estimate_and_are_shared_by_identical_maps():
    rng = np.random.default_rng(0)
    ids = np.zeros((10, 10), np.int32)
    codes = []
    for p in range(12):
        ids[p // 2 * 1 + 0, (p % 2) * 4:(p % 2) * 4 + 4] = p + 1
        codes.append([2, 14, 17][p % 3])
    truth = np.zeros((10, 10), np.uint8)
    for p, code in enumerate(codes):
        truth[ids == p + 1] = code
    noisy = np.where(rng.random((10, 10)) < 0.3, 14, truth).astype(np.uint8)
    per = {"a": polygon_confusions(ids, codes, noisy), "b": polygon_confusions(ids, codes, noisy),
           "perfect": polygon_confusions(ids, codes, truth)}
    ranges = bootstrap_ranges(per, codes, repeats=300, seed=1)
    assert ranges["a"] == ranges["b"]
    assert ranges["perfect"]["oa"] == [1.0, 1.0] and ranges["perfect"]["f1"]["D"] == [1.0, 1.0]
    cm = per["a"].sum(0)
    oa = np.trace(cm) / cm.sum()
    assert ranges["a"]["oa"][0] <= oa <= ranges["a"]["oa"][1] and ranges["a"]["oa"][0] < ranges["a"]["oa"][1]
    assert set(ranges["a"]["f1"]) == {"2", "D", "G"}


# --- the random forest ------------------------------------------------------------------------------------------


def _two_halves(tmp_path):
    """A 100 x 100 px scene (10 x 10 cells): bright left half (LCZ 2), dark, uneven right half (LCZ 17)."""
    rng = np.random.default_rng(0)
    dn = np.full((10, 100, 100), 3000, np.uint16)
    dn[:, :, 50:] = (400 + rng.integers(0, 200, size=(10, 100, 50))).astype(np.uint16)
    dn[:, 0:10, 0:10] = 0          # one cell of nodata
    path = tmp_path / "halves.tif"
    fakedata.write_raster(path, dn, UTM, Affine(10, 0, 0, 0, -10, 1000), nodata=0, descriptions=MODEL_BANDS)
    return path


def test_forest_features_are_band_statistics_of_each_cell_and_its_neighbourhoods(tmp_path):
    features = cell_features(str(_two_halves(tmp_path)))
    assert features.values.shape == (10, 10, 60) and features.shape == (10, 10)
    assert features.transform == Affine(100, 0, 0, 0, -100, 1000)
    assert not features.valid[0, 0] and features.valid[1:, :].all()
    # Cell means and spreads of band B2 (feature 0 and 10): 0.3 and 0 on the left, about 0.05 with spread right.
    assert features.values[5, 2, 0] == pytest.approx(0.3) and features.values[5, 2, 10] == pytest.approx(0.0)
    assert 0.04 < features.values[5, 7, 0] < 0.06 and features.values[5, 7, 10] > 0.005
    # The 3 x 3 neighbourhood of a cell on the border mixes both halves.
    assert 0.05 < features.values[5, 4, 20] < 0.3


def test_forest_learns_the_polygons_and_maps_every_valid_cell(tmp_path):
    features = cell_features(str(_two_halves(tmp_path)))
    areas = [_area(2, 0, _cells(2, 1, 2, 2)), _area(17, 1, _cells(2, 6, 2, 2))]
    ids = polygon_cells(areas, features)
    assert (ids == 1).sum() == 4 and (ids == 2).sum() == 4
    codes = predict_codes(train_forest(features, areas, seed=0), features)
    assert codes[0, 0] == 0
    assert (codes[5:, :4] == 2).all() and (codes[5:, 6:] == 17).all()
    with pytest.raises(Exception, match="No valid 100 m cell"):
        train_forest(features, [_area(2, 0, (150, 850, 160, 860))])


# --- frozen layers ----------------------------------------------------------------------------------------------


def test_freezing_the_backbone_leaves_only_the_lcz_branch_trainable():
    from core.network.model import ModelConfig, build_networks

    train_net, _ = build_networks(ModelConfig(base_width=4))
    freeze_layers(train_net, "backbone")
    names = {w.path.split("/")[-2] if "/" in w.path else w.path for w in train_net.trainable_weights}
    assert names and all(n.startswith("lcz") or n.startswith("block5") or n.startswith("block6") for n in names)
    assert not any(n.endswith("_bn") for n in names)
    heads, _ = build_networks(ModelConfig(base_width=4))
    freeze_layers(heads, "heads")
    assert {w.path.split("/")[-2] for w in heads.trainable_weights} == {"lcz_ds0", "lcz_ds1", "lcz_ds2", "lcz_main",
                                                                        "lcz_p2f"}
