"""LCZ exports of a mapping run (core.predict --umep/--w2w/--majority, and the worker's PARAMS): checked before any
work, applied once the LCZ map is written, the same files as core.outputs.export.export_lcz writes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from core import worker
from core.outputs.export import majority_filter
from core.common.lcz import to_umep_codes
from core.network.saving import save_model
from core.predict import main
from tests.core.test_predict import pointwise_network, write_scene


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    from core.common.bands import MODEL_BANDS

    path = tmp_path_factory.mktemp("model") / "model.keras"
    return str(save_model(pointwise_network(), path, {"bands": list(MODEL_BANDS)}))


@pytest.fixture
def scene(tmp_path) -> str:
    """10 x 9 cells of 100 m, each of one random spectrum: the pointwise network maps a patchwork of classes."""
    cells = np.random.default_rng(3).uniform(200, 6000, (13, 9, 10))
    dn = np.kron(cells, np.ones((10, 10))).astype(np.uint16)
    return write_scene(tmp_path / "scene.tif", dn)


def cli(scene: str, out: Path, model: str, *flags: str) -> int:
    return main([scene, "--hse", str(out / "hse.tif"), "--lcz", str(out / "lcz.tif"), "--model", model,
                 "--tile-size", "32", "--overlap", "8", *flags])


def read(path: Path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.crs, ds.tags()


def test_cli_writes_umep_and_w2w_copies_of_the_majority_filtered_map(tmp_path, scene, model):
    plain, filtered = tmp_path / "plain", tmp_path / "filtered"
    assert cli(scene, plain, model) == 0
    assert cli(scene, filtered, model, "--umep", str(filtered / "umep.tif"), "--w2w", str(filtered / "w2w.tif"),
               "--majority", "3") == 0
    unfiltered, crs, tags = read(plain / "lcz.tif")
    assert "URBANMTL_MAJORITY_FILTER" not in tags
    lcz, crs_f, tags_f = read(filtered / "lcz.tif")
    assert crs_f == crs and tags_f["URBANMTL_MAJORITY_FILTER"] == "3x3"
    assert len(np.unique(unfiltered)) > 2 and not np.array_equal(lcz, unfiltered)   # the filter had work to do
    assert np.array_equal(lcz, majority_filter(unfiltered, 3))
    umep, umep_crs, _ = read(filtered / "umep.tif")
    assert umep_crs == crs and np.array_equal(umep, to_umep_codes(lcz))
    w2w, w2w_crs, _ = read(filtered / "w2w.tif")
    assert w2w_crs.to_epsg() == 4326 and set(np.unique(w2w)) <= set(np.unique(lcz)) | {0}
    # Without --majority the map is left as it is and only the copies are written.
    assert cli(scene, tmp_path / "copies", model, "--umep", str(tmp_path / "copies" / "umep.tif")) == 0
    assert np.array_equal(read(tmp_path / "copies" / "lcz.tif")[0], unfiltered)
    assert np.array_equal(read(tmp_path / "copies" / "umep.tif")[0], to_umep_codes(unfiltered))


def test_the_statistics_of_a_majority_filtered_run_count_the_filtered_map(tmp_path, scene, model):
    import csv

    from core.mapping.predict import PredictOptions, predict_scene

    def table(path: Path) -> dict[int, tuple[int, float, str]]:
        with open(path, newline="") as fh:
            return {int(r["code"]): (int(r["cells"]), float(r["area_km2"]), r["mean_hse"]) for r in csv.DictReader(fh)}

    options = PredictOptions(tile_size=32, overlap=8)
    runs = {}
    for name, size in (("plain", 0), ("filtered", 3)):
        out = tmp_path / name
        out.mkdir()
        runs[name] = predict_scene(scene, str(out / "hse.tif"), str(out / "lcz.tif"), stats_path=str(out / "s.csv"),
                                   model_path=model, options=options, majority=size)
    plain, filtered = table(tmp_path / "plain" / "s.csv"), table(tmp_path / "filtered" / "s.csv")
    lcz = read(tmp_path / "filtered" / "lcz.tif")[0]
    counts = np.bincount(lcz.ravel(), minlength=18)
    assert {code: row[0] for code, row in filtered.items()} == {code: int(counts[code]) for code in range(1, 18)}
    assert filtered != plain and [r["cells"] for r in runs["filtered"].stats] == list(counts[1:])
    # Cells only change class: the area and the mean HSE of the whole map stay those of the unfiltered run.
    area = sum(row[1] for row in filtered.values())
    assert area == pytest.approx(sum(row[1] for row in plain.values()), abs=1e-3)
    weighted = [(r["cells"], r["mean_hse"]) for r in runs["filtered"].stats if r["mean_hse"] is not None]
    plain_weighted = [(r["cells"], r["mean_hse"]) for r in runs["plain"].stats if r["mean_hse"] is not None]
    mean = sum(n * m for n, m in weighted) / sum(n for n, _ in weighted)
    assert mean == pytest.approx(sum(n * m for n, m in plain_weighted) / sum(n for n, _ in plain_weighted), abs=0.02)
    assert "count the filtered map" in " ".join(runs["filtered"].messages)


@pytest.mark.parametrize("flags, message", [
    (["--umep", "{out}/umep.png"], "must be a GeoTIFF"),
    (["--w2w", "{out}/lcz.tif"], "would replace the LCZ map itself"),
    (["--umep", "{out}/hse.tif"], "would replace the HSE map"),
    (["--w2w", "{scene}"], "would replace an input file"),
    (["--umep", "{out}/x.tif", "--w2w", "{out}/x.tif"], "same name"),
    (["--umep", "{out}/taken.tif"], "exists already"),
])
def test_cli_bad_export_names_fail_before_any_work(tmp_path, scene, flags, message, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "taken.tif").write_bytes(b"the user's file")
    # A model that does not exist: had the engine started the work, it would fail on the model instead.
    code = cli(scene, out, str(tmp_path / "no_model.keras"), *[f.format(out=out, scene=scene) for f in flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in out.iterdir()) == ["taken.tif"]
    assert (out / "taken.tif").read_bytes() == b"the user's file"


def test_cli_majority_accepts_only_off_3_and_5(tmp_path, scene, model, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli(scene, tmp_path, model, "--majority", "4")
    assert stopped.value.code == 2 and "invalid choice: 4" in capsys.readouterr().err


def test_worker_params_take_the_same_exports(tmp_path, scene, model):
    out = tmp_path / "out"
    stream = io.StringIO()
    params = {"input": scene, "hse": str(out / "hse.tif"), "lcz": str(out / "lcz.tif"), "model": model,
              "umep": str(out / "umep.tif"), "w2w": str(out / "w2w.tif"), "majority": 5,
              "options": {"tile_size": 32, "overlap": 8, "device": "cpu"}}
    (tmp_path / "params.json").write_text(json.dumps(params))
    args = worker.build_parser().parse_args([str(tmp_path / "params.json")])
    assert worker.run(worker.read_params(args), worker.Channel(stream)) == worker.EXIT_OK
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    result = events[-1]
    assert result["event"] == "result" and result["umep"] == str(out / "umep.tif")
    assert result["w2w"] == str(out / "w2w.tif") and result["majority"] == 5
    assert any("Majority filter 5x5" in e.get("message", "") for e in events if e["event"] == "log")
    lcz, _, tags = read(out / "lcz.tif")
    assert tags["URBANMTL_MAJORITY_FILTER"] == "5x5"
    assert np.array_equal(read(out / "umep.tif")[0], to_umep_codes(lcz))
    # The same as flags, and a bad one is one user error before any work.
    args = worker.build_parser().parse_args(["--input", scene, "--hse", str(tmp_path / "h.tif"), "--lcz",
                                             str(tmp_path / "l.tif"), "--umep", str(tmp_path / "u.jpg")])
    params = worker.read_params(args)
    assert params["umep"] == str(tmp_path / "u.jpg")
    with pytest.raises(Exception, match="must be a GeoTIFF"):
        worker.run(params, worker.Channel(io.StringIO()))
    assert not (tmp_path / "l.tif").exists()
