"""Training from LCZ training areas (core.finetune, core.finetuning.areas, core.evaluation.accuracy) and LCZ exports
(core.outputs.export): class codes, the whole-polygon split, the metrics against hand-computed values, the export codes
and a short real fine-tuning end to end."""

from __future__ import annotations

import json
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from core import finetune
from core.evaluation.accuracy import polygon_confusions, score, scoring_cells
from core.common.errors import UrbanMTLError
from core.outputs.export import export_lcz, majority_filter
from core.common.lcz import to_umep_codes
from core.finetuning.areas import TrainingArea, check_inside, read_training_areas, split_areas
from tests import fakedata

UTM = "EPSG:32633"


def _boxes(n: int) -> list[tuple[int, int, int, int]]:
    """n disjoint 10 x 10 px boxes of a fake scene, in rows of 8."""
    return [(12 * (i // 8), 12 * (i % 8), 12 * (i // 8) + 10, 12 * (i % 8) + 10) for i in range(n)]


def _square(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Polygon", "coordinates": [[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]}


def _area(code: int, index: int, box=(0.0, 0.0, 10.0, 10.0)) -> TrainingArea:
    return TrainingArea(code, _square(*box), box, f"feature {index}", index)


# --- class codes ------------------------------------------------------------------------------------------------


def test_class_values_in_every_encoding_are_read_as_codes_1_to_17(tmp_path):
    text = ["1", "10", "a", "G", "101", "107", "LCZ 6", " d ", "17"]
    path = fakedata.make_polygons(tmp_path, boxes=_boxes(len(text)), values=text, driver="GPKG", attribute="klass")
    assert [a.code for a in read_training_areas(path, "klass", UTM)] == [1, 10, 11, 17, 11, 17, 6, 14, 17]
    numbers = fakedata.make_polygons(tmp_path, boxes=_boxes(4), values=[1, 17, 101, 107], name="numbers")
    areas = read_training_areas(numbers, "lcz", UTM)
    assert [a.code for a in areas] == [1, 17, 11, 17]
    # Reprojected from EPSG:4326 to the image CRS: box (0, 0)-(10, 10) px of the fake scene, to within a cm.
    x0, y0 = fakedata.pixel_to_xy(10, 0)
    x1, y1 = fakedata.pixel_to_xy(0, 10)
    assert np.allclose(areas[0].bounds, (x0, y0, x1, y1), atol=0.01)


def test_kml_with_one_folder_per_polygon_is_read_across_its_layers(tmp_path):
    path = fakedata.make_polygons(tmp_path, boxes=_boxes(3), values=["2", "B", "102"], driver="KML")
    assert [a.code for a in read_training_areas(path, "Name", UTM)] == [2, 12, 12]


def test_unknown_codes_missing_field_and_no_polygons_are_one_clear_error_each(tmp_path):
    bad = fakedata.make_polygons(tmp_path, boxes=_boxes(4), values=["2", "X", "0", "108"], driver="GPKG")
    with pytest.raises(UrbanMTLError, match=r"3 polygon\(s\).*'X', '0', '108'.*101-107"):
        read_training_areas(bad, "lcz", UTM)
    with pytest.raises(UrbanMTLError, match=r"no field 'class'\. Its fields: lcz\. Choose"):
        read_training_areas(bad, "class", UTM)
    empty = tmp_path / "empty.gpkg"
    with fiona.open(empty, "w", driver="GPKG", crs_wkt=CRS.from_epsg(4326).to_wkt(),
                    schema={"geometry": "Polygon", "properties": {"lcz": "str"}}):
        pass
    with pytest.raises(UrbanMTLError, match="holds no polygons"):
        read_training_areas(empty, "lcz", UTM)
    points = tmp_path / "points.gpkg"
    with fiona.open(points, "w", driver="GPKG", crs_wkt=CRS.from_epsg(4326).to_wkt(),
                    schema={"geometry": "Point", "properties": {"lcz": "str"}}) as dst:
        dst.write({"geometry": {"type": "Point", "coordinates": (15.0, 52.0)}, "properties": {"lcz": "2"}})
    with pytest.raises(UrbanMTLError, match="not polygons"):
        read_training_areas(points, "lcz", UTM)
    with pytest.raises(UrbanMTLError, match="does not exist"):
        read_training_areas(tmp_path / "nothere.gpkg", "lcz", UTM)


def test_polygons_outside_the_image_are_an_error():
    inside, outside = _area(2, 0, (10, 10, 20, 20)), _area(2, 1, (500, 500, 600, 600))
    check_inside([inside], (0, 0, 100, 100), UTM)
    with pytest.raises(UrbanMTLError, match=r"1 of the 2 polygons lie outside.*feature 1"):
        check_inside([inside, outside], (0, 0, 100, 100), UTM)
    with pytest.raises(UrbanMTLError, match="All polygons lie outside"):
        check_inside([outside], (0, 0, 100, 100), UTM)


# --- the split --------------------------------------------------------------------------------------------------


def test_split_keeps_polygons_whole_and_stratifies_by_class():
    areas = [_area(code, i) for i, code in enumerate([2] * 10 + [14] * 3 + [17] * 2)]
    train, test = split_areas(areas, 0.3, seed=4)
    train_ids, test_ids = {a.index for a in train}, {a.index for a in test}
    assert not train_ids & test_ids and train_ids | test_ids == set(range(15))
    held = {code: sum(a.code == code for a in test) for code in (2, 14, 17)}
    assert held == {2: 3, 14: 1, 17: 1}          # round(0.3 n), at least 1, at most n - 1
    assert all(any(a.code == code for a in train) for code in (2, 14, 17))
    again = split_areas(areas, 0.3, seed=4)
    assert [a.index for a in again[1]] == [a.index for a in test]
    draws = {tuple(a.index for a in split_areas(areas, 0.3, seed=s)[1]) for s in range(6)}
    assert len(draws) > 1                        # the seed matters


def test_a_class_with_one_polygon_and_a_bad_share_are_errors():
    areas = [_area(2, 0), _area(2, 1), _area(7, 2), _area(17, 3)]
    with pytest.raises(UrbanMTLError, match=r"7 Lightweight low-rise, G Water have only one polygon"):
        split_areas(areas)
    with pytest.raises(UrbanMTLError, match="between 0 and 1"):
        split_areas(areas[:2], test_share=1.0)


# --- metrics ----------------------------------------------------------------------------------------------------


def test_metrics_match_hand_computed_values():
    # (reference, map) cells: LCZ 2 x4 -> 2, 2, 3, D; LCZ 3 x2 -> 3, 2; D x3 -> D, D, E; G x1 -> G.
    pairs = [(2, 2), (2, 2), (2, 3), (2, 14), (3, 3), (3, 2), (14, 14), (14, 14), (14, 15), (17, 17)]
    cm = np.zeros((17, 17), dtype=np.int64)
    for ref, pred in pairs:
        cm[ref - 1, pred - 1] += 1
    s = score(cm)
    assert s["oa"] == pytest.approx(0.6)
    assert s["oa_u"] == pytest.approx(3 / 6)                 # rows 2 and 3: 3 of 6 correct
    assert s["oa_bu"] == pytest.approx(9 / 10)               # only 2 -> D crosses built/natural
    assert s["oa_bu_without_e"] == pytest.approx(8 / 9)      # the D -> E cell dropped
    # W (twelfths): 2-2 12, 2-3 11, 2-D 1, 3-3 12, 3-2 11, D-D 12, D-E 9, G-G 12: (24+11+1+12+11+24+9+12)/12/10
    assert s["oa_w"] == pytest.approx(104 / 120)
    # chance agreement (4*3 + 2*2 + 3*3 + 1*1) / 100 = 0.26
    assert s["kappa"] == pytest.approx((0.6 - 0.26) / 0.74)
    assert s["f1"]["2"] == pytest.approx(4 / 7) and s["f1"]["3"] == pytest.approx(0.5)
    assert s["f1"]["D"] == pytest.approx(2 / 3) and s["f1"]["E"] == 0.0 and s["f1"]["G"] == 1.0
    assert s["f1"]["1"] is None and s["cells"] == 10
    assert s["cells_per_class"] == {"2": 4, "3": 2, "D": 3, "G": 1}
    assert np.array_equal(np.array(s["confusion"]), cm)


def test_test_cells_are_cell_centres_inside_test_polygons_away_from_training_polygons(tmp_path):
    lcz = tmp_path / "lcz.tif"
    fakedata.write_raster(lcz, np.full((1, 10, 10), 2, np.uint8), UTM, Affine(100, 0, 0, 0, -100, 1000), nodata=0)
    test = [_area(2, 0, (160, 600, 400, 900))]       # centres x 250, 350 and y 650, 750, 850 inside: 6 cells
    train = [_area(2, 1, (390, 600, 600, 900))]      # touches the cells of x 300-400: 3 of them left out
    ids, excluded = scoring_cells(test, [], lcz)
    assert ids.sum() == 6 and ids[1:4, 2:4].all()
    ids, excluded = scoring_cells(test, train, lcz)
    assert excluded == 3 and ids.sum() == 3 and ids[1:4, 2].all()
    prediction = np.full((10, 10), 2, np.uint8)
    prediction[1, 2] = 0                              # nodata in the map: not counted
    prediction[2, 2] = 17
    cms = polygon_confusions(ids, [2], prediction)
    assert cms.shape == (1, 17, 17) and cms[0, 1, 1] == 1 and cms[0, 1, 16] == 1 and cms.sum() == 2


# --- exports ----------------------------------------------------------------------------------------------------


def test_umep_codes_and_majority_filter():
    assert to_umep_codes(np.arange(19)).tolist() == [0, *range(1, 11), *range(101, 108), 0]
    codes = np.array([[1, 1, 2, 2],
                      [1, 17, 2, 0],
                      [0, 2, 2, 0],
                      [0, 0, 0, 0]], np.uint8)
    expected = np.array([[1, 1, 2, 2],
                         [1, 2, 2, 0],        # 17 is outvoted; nodata stays nodata
                         [0, 2, 2, 0],
                         [0, 0, 0, 0]], np.uint8)
    assert np.array_equal(majority_filter(codes, 3), expected)
    # A tie keeps the cell's own class: 1 and 2 both twice around the top-left 1.
    tie = np.array([[1, 2], [2, 1]], np.uint8)
    assert np.array_equal(majority_filter(tie, 3), tie)
    assert majority_filter(np.full((3, 3), 5, np.uint8), 5).tolist() == [[5] * 3] * 3


def test_export_writes_umep_codes_a_w2w_copy_in_epsg4326_and_filters_in_place(tmp_path):
    lcz = tmp_path / "lcz.tif"
    codes = np.full((1, 20, 30), 14, np.uint8)
    codes[0, 5:15, 5:15] = 2
    codes[0, 10, 10] = 17                              # a lone cell the filter removes, with the square's 4 corners
    codes[0, :, :2] = 0
    fakedata.write_raster(lcz, codes, UTM, fakedata.scene_transform(pixel=100.0), nodata=0)
    result = export_lcz(lcz, umep_path=tmp_path / "umep.tif", w2w_path=tmp_path / "w2w.tif", majority=3)
    assert result["changed_cells"] == 5 and result["majority"] == 3
    with rasterio.open(lcz) as ds:
        filtered = ds.read(1)
        assert filtered[10, 10] == 2 and filtered[5, 5] == filtered[14, 14] == 14 and filtered[6, 6] == 2
        assert ds.tags()["URBANMTL_MAJORITY_FILTER"] == "3x3"
    with rasterio.open(tmp_path / "umep.tif") as ds:
        umep = ds.read(1)
        assert ds.crs == CRS.from_user_input(UTM) and ds.nodata == 0 and ds.dtypes == ("uint8",)
        assert set(np.unique(umep)) == {0, 2, 104}
        assert np.array_equal(umep, to_umep_codes(filtered))
    with rasterio.open(tmp_path / "w2w.tif") as ds:
        assert ds.crs.to_epsg() == 4326 and ds.count == 1 and ds.dtypes == ("uint8",) and ds.nodata == 0
        assert set(np.unique(ds.read(1))) <= {0, 2, 14} and {2, 14} <= set(np.unique(ds.read(1)))
        assert "lczFilter" not in (ds.descriptions[0] or "")
        assert abs(ds.res[0] - 100 / 111_000) < 0.0005      # about 100 m in degrees
    with pytest.raises(UrbanMTLError, match="0 \\(off\\), 3 or 5"):
        export_lcz(lcz, majority=4)
    with pytest.raises(UrbanMTLError, match="would replace the LCZ map"):
        export_lcz(lcz, umep_path=lcz)
    with pytest.raises(UrbanMTLError, match="exists already"):
        export_lcz(lcz, w2w_path=tmp_path / "w2w.tif", overwrite=False)
    with pytest.raises(UrbanMTLError, match="same name"):
        export_lcz(lcz, umep_path=tmp_path / "x.tif", w2w_path=tmp_path / "x.tif")


# --- end to end -------------------------------------------------------------------------------------------------


def _scene_with_areas(folder: Path, driver: str = "GPKG") -> tuple[Path, Path]:
    """A fake scene (160 px) and 6 training squares of 200 m: two LCZ 2 on its built square, two D (plants)
    above, two G (water) below, with class values in three encodings."""
    fakedata.make_scene(folder, size=160, lcz=None, hse=False)
    boxes = [(40, 40, 60, 60), (60, 60, 80, 80), (10, 90, 30, 110), (10, 130, 30, 150), (100, 20, 120, 40),
             (130, 100, 150, 120)]
    polygons = fakedata.make_polygons(folder, boxes=boxes, values=["2", "2", "d", "104", "G", "17"], driver=driver,
                                      attribute="klass")
    return folder / "fake_scene_l1c.tif", polygons


def test_cli_bad_input_exits_2_with_one_error_line(tmp_path, capsys):
    image, polygons = _scene_with_areas(tmp_path)
    code = finetune.main(["--image", str(image), "--polygons", str(polygons), "--field", "lcz",
                          "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Its fields: klass" in err and len(err.strip().splitlines()) == 1


def test_finetune_end_to_end_on_a_small_scene(tmp_path, capsys):
    image, polygons = _scene_with_areas(tmp_path)
    run = tmp_path / "run"
    code = finetune.main(["--image", str(image), "--polygons", str(polygons), "--field", "klass", "--out", str(run),
                          "--epochs", "1", "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Mapping the image" in out and "OA " in out and " -> " in out
    result = json.loads((run / "accuracy.json").read_text())
    for key in ("oa", "oa_bu", "kappa", "confusion"):
        assert result[key] == result["after"][key]
    cm = np.array(result["confusion"])
    assert cm.shape == (17, 17) and cm.sum() == result["after"]["cells"] > 0
    split = result["split"]
    assert split["n_train"] == split["n_test"] == 3
    assert split["train_polygons"] == split["test_polygons"] == {"2": 1, "D": 1, "G": 1}
    assert split["train_pixels_10m"] == {"2": 400, "D": 400, "G": 400}
    assert sum(split["test_cells_100m"].values()) == result["after"]["cells"]
    assert set(result["before"]) >= {"oa", "oa_u", "oa_bu", "oa_w", "kappa", "f1", "confusion"}
    assert "oa_gain_95" in result["bootstrap"]
    # Train and test polygons are whole and apart, written in the image CRS with codes 1..17.
    sides = {}
    for side in ("train", "test"):
        with fiona.open(run / f"{side}_areas.gpkg") as src:
            assert CRS.from_wkt(src.crs_wkt).to_epsg() == 32633
            sides[side] = {(f["properties"]["source"], f["properties"]["lcz"]) for f in src}
    assert not sides["train"] & sides["test"] and len(sides["train"] | sides["test"]) == 6
    assert {code for _, code in sides["train"]} == {2, 14, 17}
    card = json.loads((run / "model_card.json").read_text())
    assert card["training"]["config"]["init_from"] and card["fine_tuning"]["split"]["n_test"] == 3
    assert (run / "model.keras").exists() and (run / "maps" / "lcz_after.tif").exists()
    page = (run / "accuracy.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "Confusion matrices" in page and "<script" not in page
    # Refit (the default): the scores are those of RUN/heldout (train polygons only); RUN's own model was then
    # trained on all six polygons, from the same start model.
    settings = result["settings"]
    assert settings["tested_model"] == str(run / "heldout" / "model.keras")
    assert (run / "heldout" / "model.keras").exists()
    # Its checkpoints (only --resume needs them) are gone; its model, card and log stay.
    assert not [p.name for p in (run / "heldout").iterdir() if p.name.endswith((".h5", ".npz"))]
    assert (run / "heldout" / "model_card.json").exists() and (run / "heldout" / "log.csv").exists()
    assert settings["refit"]["polygons"] == 6 and settings["model"] == str(run / "model.keras")
    with fiona.open(run / "all_areas.gpkg") as src:
        assert {(f["properties"]["source"], f["properties"]["lcz"]) for f in src} == sides["train"] | sides["test"]
    assert "all_areas.gpkg" in (run / "all_scene.yaml").read_text()
    assert "trained the same way on all 6 polygons" in page
    assert result["seconds"]["refit"] > 0
    # The random forest on the same train polygons is scored on the same test cells, beside both networks.
    assert result["forest"]["cells"] == result["after"]["cells"] == result["before"]["cells"]
    ranges = result["bootstrap"]["ranges_95"]
    assert set(ranges) == {"before", "after", "forest"}
    for tag in ranges:
        low, high = ranges[tag]["oa"]
        assert low - 1e-4 <= result[tag]["oa"] <= high + 1e-4 and set(ranges[tag]["f1"]) == {"2", "D", "G"}
    assert "random forest" in page and "F1 fine-tuned" in page
    assert isinstance(result["warnings"], list)
    # Only the LCZ branch learnt: the run's HSE map is the start model's, to the bit; its LCZ map is written.
    maps = run / "maps"
    with rasterio.open(maps / "hse_before.tif") as a, rasterio.open(maps / "hse_final.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
    with rasterio.open(maps / "lcz_forest.tif") as forest, rasterio.open(maps / "lcz_final.tif") as final:
        assert forest.transform == final.transform and forest.shape == final.shape
        assert set(np.unique(forest.read(1))) <= {0, 2, 14, 17} and forest.colormap(1)[2][:3] == (209, 0, 0)
    # The distillation's translation: the classes of the polygons it trained on are lumped.
    assert json.loads((run / "distill_train.json").read_text())["lump"] == [2, 14, 17]
    assert np.array(json.loads((run / "distill_all.json").read_text())["matrix"]).shape == (17, 17)
    # The run folder is taken: a second run into it is refused before any work.
    assert finetune.main(["--image", str(image), "--polygons", str(polygons), "--field", "klass",
                          "--out", str(run)]) == 2
    # --no-refit: the tested model is the run's model.
    plain = tmp_path / "plain"
    assert finetune.main(["--image", str(image), "--polygons", str(polygons), "--field", "klass", "--out",
                          str(plain), "--epochs", "1", "--seed", "3", "--no-refit"]) == 0
    settings = json.loads((plain / "accuracy.json").read_text())["settings"]
    assert settings["refit"] is None and settings["tested_model"] == settings["model"] == str(plain / "model.keras")
    assert not (plain / "heldout").exists() and not (plain / "all_areas.gpkg").exists()
