"""End to end: urbanmtl:train_from_polygons through the real qgis_process.bin on a crop of a real city, with training
areas labelled from that city's teacher LCZ map, then the trained model chained into urbanmtl:map_hse_lcz; and the
training areas a user gets wrong, each one clear message with no traceback and no output folder left behind.

The environment is the one of tests/e2e/test_qgis_process.py: a throwaway HOME, the checkout as the plugin, and the
engine run by the checkout's .venv python in a child process (QGIS's own Python gets no TensorFlow).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_qgis_process import QGIS_PROCESS, REPO, VENV_PYTHON, qgis_environment


CITIES = REPO.parent / "shared" / "data" / "cities"
CITY = "pisa_20180211"
#: A 2.56 km square of Pisa (10 m pixels): fields (LCZ D) and open low-rise (LCZ 6) next to each other.
CROP, CROP_OFFSET = 256, (200, 300)
#: Training squares: 15 x 15 teacher pixels of 20 m = 300 m, on a 16-pixel grid of the crop's 20 m grid.
SQUARE, STEP = 15, 16
PER_CLASS = 3


def _available() -> bool:
    return (CITIES / f"{CITY}_S2L1C_10band.tif").exists() and (CITIES / f"{CITY}_lcz_teacher_20m.tif").exists()


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not _available(), reason="../shared/data/cities is not available"),
    pytest.mark.skipif(not QGIS_PROCESS.exists(), reason="qgis_process.bin (QGIS 3.22) is not installed"),
    pytest.mark.skipif(not VENV_PYTHON.exists(), reason="the venv with TensorFlow is missing (make venv)"),
]


def crop_city(path: Path) -> Path:
    """The CROP x CROP window of the city's 10-band image (band names and georeference kept)."""
    import rasterio
    from rasterio.windows import Window

    window = Window(CROP_OFFSET[1], CROP_OFFSET[0], CROP, CROP)
    with rasterio.open(CITIES / f"{CITY}_S2L1C_10band.tif") as src:
        profile = src.profile.copy()
        profile.update(width=CROP, height=CROP, transform=src.window_transform(window))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.descriptions = src.descriptions
    return path


def teacher_squares(image: Path) -> list[tuple[int, dict]]:
    """(LCZ code, 300 m square polygon in the image CRS) of every square of the crop where one teacher class
    covers at least 90 % of the 20 m pixels, purest first."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(image) as src:
        transform = src.transform
    r0, c0 = CROP_OFFSET[0] // 2, CROP_OFFSET[1] // 2
    with rasterio.open(CITIES / f"{CITY}_lcz_teacher_20m.tif") as teacher:
        codes = teacher.read(window=Window(c0, r0, CROP // 2, CROP // 2)).argmax(axis=0) + 1
    squares = []
    for i in range(0, CROP // 2 - SQUARE + 1, STEP):
        for j in range(0, CROP // 2 - SQUARE + 1, STEP):
            values, counts = np.unique(codes[i:i + SQUARE, j:j + SQUARE], return_counts=True)
            share = counts.max() / counts.sum()
            if share >= 0.9:
                x0, y0 = transform * (2 * j, 2 * i)
                x1, y1 = transform * (2 * (j + SQUARE), 2 * (i + SQUARE))
                ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
                squares.append((share, int(values[counts.argmax()]), {"type": "Polygon", "coordinates": [ring]}))
    squares.sort(key=lambda s: -s[0])
    return [(code, geometry) for _, code, geometry in squares]


def write_areas(path: Path, areas: list[tuple[object, dict]], src_crs, field: str = "lcz") -> Path:
    """A GeoPackage of polygons in EPSG:4326 (another CRS than the image's) with the class in `field`."""
    import fiona
    from rasterio.warp import transform_geom

    with fiona.open(path, "w", driver="GPKG", crs="EPSG:4326",
                    schema={"geometry": "Polygon", "properties": {field: "str"}}) as dst:
        for value, geometry in areas:
            dst.write({"geometry": transform_geom(src_crs, "EPSG:4326", geometry), "properties": {field: str(value)}})
    return path


def letter(code: int) -> str:
    return str(code) if code <= 10 else "ABCDEFG"[code - 11]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """The crop, its training areas (the two commonest pure teacher classes, PER_CLASS squares each, written as
    WUDAPT users do: digits for built types, letters for land cover) and a qgis_process environment."""
    pytest.importorskip("tensorflow")
    import rasterio

    folder = tmp_path_factory.mktemp("train_e2e")
    home, plugins = folder / "home", folder / "plugins"
    home.mkdir()
    plugins.mkdir()
    (plugins / "urbanmtl").symlink_to(REPO, target_is_directory=True)
    env = qgis_environment(home, plugins)
    run_qgis(env, "plugins", "enable", "urbanmtl", check=True)
    image = crop_city(folder / "pisa_crop.tif")
    with rasterio.open(image) as src:
        crs, bounds = src.crs, src.bounds
    squares = teacher_squares(image)
    classes = [code for code, _ in Counter(code for code, _ in squares).most_common(2)]
    assert len(classes) == 2 and all(sum(c == code for c, _ in squares) >= PER_CLASS for code in classes), squares
    chosen: list[tuple[str, dict]] = []
    for code in classes:
        chosen += [(letter(code), geometry) for c, geometry in squares if c == code][:PER_CLASS]
    yield {"folder": folder, "env": env, "image": image, "crs": crs, "bounds": bounds, "squares": chosen,
           "areas": write_areas(folder / "areas.gpkg", chosen, crs)}
    shutil.rmtree(home, ignore_errors=True)


def run_qgis(env: dict, *args: str, check: bool = False, timeout: int = 300):
    import subprocess

    done = subprocess.run([str(QGIS_PROCESS), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert done.returncode == 0, f"qgis_process {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def train(city: dict, polygons: Path, out: Path, *extra: str):
    return run_qgis(city["env"], "run", "urbanmtl:train_from_polygons", "--", f"INPUT={city['image']}",
                    f"POLYGONS={polygons}", "FIELD=lcz", "EPOCHS=2", f"OUTPUT_FOLDER={out}", *extra)


def test_train_from_polygons_then_map_with_the_trained_model(city, tmp_path):
    import rasterio

    out = tmp_path / "run"
    done = train(city, city["areas"], out, "DISTILL=0.5")
    log = f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    assert done.returncode == 0, log
    assert "Traceback" not in log, log
    # The log: input, polygons (train/test), epochs, time, OA before -> after.
    assert f"Input: {city['image']}" in done.stdout, log
    assert "Trained 2 epochs on 4 polygons (2 held out for testing) in " in done.stdout, log
    assert "Overall accuracy on the held-out polygons" in done.stdout and " -> " in done.stdout, log
    # The run's model is the refit on all six polygons; the held-out figures are those of out/heldout.
    assert "Then the final model was trained the same way on all 6 polygons" in done.stdout, log
    results = dict(line.split(":\t", 1) for line in done.stdout.splitlines() if ":\t" in line)
    assert results["MODEL_PATH"] == str(out / "model.keras") and (out / "model.keras").is_file(), log
    assert results["REPORT"] == str(out / "accuracy.html") and (out / "accuracy.html").is_file(), log
    assert not (out / finetune_marker()).exists()

    accuracy = json.loads((out / "accuracy.json").read_text())
    for key in ("oa", "oa_bu", "kappa", "confusion", "before", "after"):
        assert key in accuracy, key
    assert float(results["OA_BEFORE"]) == pytest.approx(accuracy["before"]["oa"])
    assert float(results["OA_AFTER"]) == pytest.approx(accuracy["after"]["oa"]) == pytest.approx(accuracy["oa"])
    # The LCZ Generator's random forest on the same areas, scored on the same held-out cells, in log and report.
    assert float(results["OA_FOREST"]) == pytest.approx(accuracy["forest"]["oa"])
    assert accuracy["forest"]["cells"] == accuracy["after"]["cells"]
    assert "A random forest trained on the same areas the LCZ Generator's way" in done.stdout, log
    assert "random forest" in (out / "accuracy.html").read_text()
    # DISTILL (Advanced) reaches the engine.
    assert accuracy["settings"]["distill"] == 0.5 and accuracy["settings"]["freeze"] == "backbone"
    assert accuracy["split"]["n_train"] == 4 and accuracy["split"]["n_test"] == 2
    assert accuracy["settings"]["epochs"] == 2
    cm = np.array(accuracy["confusion"])
    assert cm.shape == (17, 17) and cm.sum() == accuracy["after"]["cells"] > 0
    assert 0.0 <= accuracy["oa"] <= 1.0 and -1.0 <= accuracy["kappa"] <= 1.0
    assert accuracy["settings"]["polygons"] == str(city["areas"])
    assert "<table" in (out / "accuracy.html").read_text()

    # A second run into the same folder is refused with one sentence, and leaves the first run as it was.
    again = train(city, city["areas"], out)
    assert again.returncode != 0 and "already holds a training run" in again.stdout + again.stderr
    assert "Traceback" not in again.stdout + again.stderr
    assert (out / "model.keras").is_file() and (out / "accuracy.json").is_file()

    # The trained model maps: the mapping algorithm with MODEL = MODEL_PATH, with the UMEP export and majority.
    maps = tmp_path / "maps"
    mapped = run_qgis(city["env"], "run", "urbanmtl:map_hse_lcz", "--", f"INPUT={city['image']}",
                      f"MODEL={results['MODEL_PATH']}", "DEVICE=1", "MAJORITY=1", f"OUTPUT_HSE={maps / 'hse.tif'}",
                      f"OUTPUT_LCZ={maps / 'lcz.tif'}", f"OUTPUT_LCZ_UMEP={maps / 'lcz_umep.tif'}")
    mlog = f"--- stdout ---\n{mapped.stdout}\n--- stderr ---\n{mapped.stderr}"
    assert mapped.returncode == 0, mlog
    assert f"model {out / 'model.keras'}" in mapped.stdout and "Majority filter 3x3" in mapped.stdout, mlog
    with rasterio.open(maps / "lcz.tif") as src:
        lcz = src.read(1)
        assert src.crs == city["crs"] and src.tags()["URBANMTL_MODEL"] == str(out / "model.keras")
    with rasterio.open(maps / "lcz_umep.tif") as src:
        umep = src.read(1)
    assert lcz.shape == umep.shape and (lcz[:-1, :-1] > 0).all()
    assert np.array_equal(np.where(lcz > 10, lcz + 90, lcz), umep)
    # Where the trained model was taught, it maps the taught classes.
    taught = {value for value, _ in city["squares"]}
    mapped_letters = {letter(int(code)) for code in np.unique(lcz)}
    assert taught <= mapped_letters, (taught, mapped_letters)


def finetune_marker() -> str:
    from core.common.run_folder import MARKER

    return MARKER


def _shift(geometry: dict, dx: float) -> dict:
    return {"type": "Polygon", "coordinates": [[(x + dx, y) for x, y in geometry["coordinates"][0]]]}


def test_training_areas_a_user_gets_wrong_are_one_clear_message_each(city, tmp_path):
    import fiona

    squares = city["squares"]
    empty = tmp_path / "empty.gpkg"
    with fiona.open(empty, "w", driver="GPKG", crs="EPSG:4326",
                    schema={"geometry": "Polygon", "properties": {"lcz": "str"}}):
        pass
    cases = {
        "no polygons": (empty, "holds no polygons"),
        "unknown codes": (write_areas(tmp_path / "codes.gpkg", [("X", g) for _, g in squares[:3]]
                                      + [("99", g) for _, g in squares[3:]], city["crs"]),
                          "not an LCZ class: 'X', '99'"),
        "outside the raster": (write_areas(tmp_path / "outside.gpkg", [(v, _shift(g, 50_000.0)) for v, g in squares],
                                           city["crs"]), "All polygons lie outside the Sentinel-2 image"),
        "one polygon of a class": (write_areas(tmp_path / "single.gpkg", squares[:PER_CLASS + 1], city["crs"]),
                                   "have only one polygon"),
    }
    for what, (polygons, message) in cases.items():
        out = tmp_path / f"run_{what.replace(' ', '_')}"
        done = train(city, polygons, out)
        log = f"{what}\n--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
        assert done.returncode != 0, log
        assert message in done.stderr, log
        assert "Traceback" not in done.stdout + done.stderr, log
        # One message: every error line qgis_process prints is that same sentence.
        errors = {line.split("\t", 1)[-1] for line in done.stderr.splitlines()
                  if line.strip() and not line.startswith(("QStandardPaths", "<string>"))}
        assert len(errors) == 1, log
        assert not out.exists(), f"{what}: the failed run left {sorted(p.name for p in out.iterdir())}"


def write_wudapt_kmz(path: Path, areas: list[tuple[str, dict]], src_crs) -> dict[str, str]:
    """The areas as the WUDAPT template is filled: a KMZ in WGS 84 with one folder per class, folder names in the
    styles users write ("LCZ 2 Compact midrise", "A", ...), 3-D coordinates, no field, and one stray point. Returns
    {class letter: folder name}."""
    import zipfile

    from rasterio.warp import transform_geom

    from core.common.lcz import label

    styles = [lambda c: f"LCZ {label(c)}", lambda c: letter(c), lambda c: f"{label(c)}", lambda c: f"LCZ {letter(c)}"]
    folders: dict[str, list[str]] = {}
    codes = {letter(c): c for c in range(1, 18)}
    for value, geometry in areas:
        ring = transform_geom(src_crs, "EPSG:4326", geometry)["coordinates"][0]
        coordinates = " ".join(f"{x:.7f},{y:.7f},0" for x, y in ring)
        folders.setdefault(value, []).append(
            f"<Placemark><name>area</name><Polygon><outerBoundaryIs><LinearRing><coordinates>{coordinates}"
            f"</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark>")
    names, parts = {}, []
    for i, (value, placemarks) in enumerate(sorted(folders.items())):
        names[value] = styles[i % len(styles)](codes[value])
        parts.append(f"<Folder><name>{names[value]}</name>{''.join(placemarks)}</Folder>")
    x, y = transform_geom(src_crs, "EPSG:4326", areas[0][1])["coordinates"][0][0]
    parts[0] = parts[0].replace("</Folder>", f"<Placemark><name>note</name><Point><coordinates>{x},{y},0"
                                             f"</coordinates></Point></Placemark></Folder>")
    kml = ('<?xml version="1.0" encoding="UTF-8"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document>'
           f"<name>WUDAPT training areas</name>{''.join(parts)}</Document></kml>")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("doc.kml", kml)
    return names


def test_a_wudapt_kmz_with_one_folder_per_class_and_no_field_trains(city, tmp_path):
    kmz = tmp_path / "training_areas.kmz"
    names = write_wudapt_kmz(kmz, city["squares"], city["crs"])
    out = tmp_path / "run"
    done = run_qgis(city["env"], "run", "urbanmtl:train_from_polygons", "--", f"INPUT={city['image']}",
                    f"POLYGONS={kmz}", "EPOCHS=2", f"OUTPUT_FOLDER={out}")
    log = f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
    assert done.returncode == 0 and "Traceback" not in log, log
    assert "one folder per class" in done.stdout and "Left out 1 feature(s)" in done.stdout, log
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert accuracy["split"]["class_names"] == dict(sorted(names.items())), accuracy["split"]
    assert accuracy["split"]["n_train"] + accuracy["split"]["n_test"] == len(city["squares"])
