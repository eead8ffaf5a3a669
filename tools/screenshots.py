"""Screenshots of the plugin in a real QGIS desktop session under Xvfb (with GLX), for the README.

    .venv/bin/python -m tools.screenshots [--out docs] [--keep WORKDIR] [--only map|train]

Starts /usr/bin/qgis as tests/desktop does (tests/desktop/harness.py, session script qgis_session.py), on a
512 x 512 px crop of the real Sentinel-2 scene in ../shared/data (the lake and villages east of the scene's
centre), with the bundled model, and saves:

- qgis_dialog.png      the algorithm's dialog, opened from Raster > urbanmtl, with its help panel;
- qgis_result.png      the styled result in the map canvas, the Layers panel with the LCZ legend;
- qgis_result_hse.png  the same with the LCZ layer hidden: HSE density over the image (0 is transparent).

and, for the training algorithm urbanmtl:train_from_polygons (session script tools/train_session.py), on the
2.56 km crop of Pisa in ../shared/data/cities that tests/e2e/test_train_from_polygons.py trains on, with ten
300 m training areas labelled from the city's teacher LCZ map with that test's code (squares where one class
covers >= 90 %: four of LCZ D, four of LCZ 6, two of LCZ 5):

- qgis_train_dialog.png  the algorithm's dialog as the toolbox opens it, the image and the training areas
                         chosen, with its help panel;
- qgis_train_report.png  the accuracy report (the run's accuracy.html) of a real run (automatic epochs, 25
                         here) started with the dialog's Run button, rendered by QGIS's web view (QtWebKit).

Needs xvfb-run (apt-get install xvfb xauth) and the venv (make venv). Takes about a minute for the mapping
screenshots and two to three more for the training ones (`--only map` or `--only train` takes one set).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.desktop import harness  # noqa: E402
from tests.desktop.harness import crop_scene, desktop_available, run_desktop, scene_available  # noqa: E402

NAMES = ("qgis_dialog.png", "qgis_result.png", "qgis_result_hse.png")
#: Upper-left (row, column) and size of the crop, in 10 m pixels of the T33UUU scene.
CROP = (256, 1024, 512, 512)

TRAIN_NAMES = ("qgis_train_dialog.png", "qgis_train_report.png")
TRAIN_SESSION = Path(__file__).resolve().parent / "train_session.py"
#: Training areas: the (at most) TRAIN_CLASSES commonest pure teacher classes of the crop that have at least
#: TRAIN_MIN_PER_CLASS pure squares, at most TRAIN_PER_CLASS squares each: here LCZ D and 6 (4 each) and 5 (2).
#: (With TRAIN_MIN_PER_CLASS = 4, only D and 6, the start model already scores 1.0 and the report shows no change.)
TRAIN_CLASSES, TRAIN_MIN_PER_CLASS, TRAIN_PER_CLASS = 3, 2, 4
#: Epochs of the run: 0 is the dialog's default, automatic (about 800 training windows; ~25 epochs here).
TRAIN_EPOCHS = 0


def training_data(folder: Path) -> tuple[Path, Path, list[str]]:
    """The crop of tests/e2e/test_train_from_polygons.py and a GeoPackage of its training areas (in the image's
    CRS, class in the field `lcz` as WUDAPT users write it), built with that test's code; and the classes."""
    from collections import Counter

    import fiona
    import rasterio

    from tests.e2e.test_train_from_polygons import crop_city, letter, teacher_squares

    folder.mkdir(parents=True, exist_ok=True)
    image = crop_city(folder / "pisa_crop.tif")
    squares = teacher_squares(image)
    counts = Counter(code for code, _ in squares)
    classes = [code for code, n in counts.most_common() if n >= TRAIN_MIN_PER_CLASS][:TRAIN_CLASSES]
    if len(classes) < 2:
        raise RuntimeError(f"too few pure teacher classes in the crop: {dict(counts)}")
    with rasterio.open(image) as src:
        crs = src.crs.to_wkt()
    areas = folder / "training_areas.gpkg"
    with fiona.open(areas, "w", driver="GPKG", crs_wkt=crs, layer="training_areas",
                    schema={"geometry": "Polygon", "properties": {"lcz": "str"}}) as dst:
        for code in classes:
            for _, geometry in [s for s in squares if s[0] == code][:TRAIN_PER_CLASS]:
                dst.write({"geometry": geometry, "properties": {"lcz": letter(code)}})
    return image, areas, [letter(code) for code in classes]


def run_session(script: Path, config: dict, workdir: Path, timeout: float):
    """harness.run_desktop with another session script (the harness reads its SESSION_SCRIPT when it runs)."""
    default = harness.SESSION_SCRIPT
    harness.SESSION_SCRIPT = script
    try:
        return run_desktop(config, workdir, timeout=timeout)
    finally:
        harness.SESSION_SCRIPT = default


def train_screenshots(work: Path, out: Path) -> int:
    from tests.e2e.test_train_from_polygons import CITY

    shots = work / "train_shots"
    shots.mkdir(parents=True, exist_ok=True)
    image, areas, classes = training_data(work / "train_data")
    print(f"training areas: {areas} (classes {', '.join(classes)})")
    config = {"report": str(work / "train_report.json"), "scene": str(image),
              "layer_name": f"{CITY.split('_')[0].capitalize()} {CITY.split('_')[1]}",
              "areas": str(areas), "areas_name": "LCZ training areas", "outputs": str(work / "train_run"),
              "epochs": TRAIN_EPOCHS, "screenshots": str(shots), "timeout_s": 540}
    run = run_session(TRAIN_SESSION, config, work / "train_session", timeout=570)
    report = run.report or {}
    if run.timed_out or report.get("stage") != "done" or not report.get("ok"):
        print(f"error: the QGIS training session failed (stage {report.get('stage')}, exit {run.returncode}, "
              f"{run.seconds:.0f} s)\n{report.get('error', '')}\n{report.get('log') or ''}\n{run.output[-3000:]}",
              file=sys.stderr)
        return 1
    for name in TRAIN_NAMES:
        shutil.copyfile(shots / name, out / name)
        print(f"wrote {out / name}")
    print(f"QGIS training session: {run.seconds:.0f} s, of which training {report.get('run_seconds', 0):.0f} s")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNG files (docs)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--only", choices=("map", "train"), help="take only the mapping or the training screenshots")
    args = parser.parse_args(argv)
    problem = desktop_available()
    if not problem and args.only != "train" and not scene_available():
        problem = "../shared/data/scene is missing"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="urbanmtl-screenshots-"))
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        status = 0 if args.only == "train" else map_screenshots(work, args.out)
        if status == 0 and args.only != "map":
            status = train_screenshots(work, args.out)
        return status
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def map_screenshots(work: Path, outdir: Path) -> int:
    shots, out = work / "shots", work / "out"
    for folder in (shots, out):
        folder.mkdir(parents=True, exist_ok=True)
    row, col, height, width = CROP
    scene = crop_scene(work / "scene" / "T33UUU_20170216_crop.tif", row, col, height, width)
    config = {"report": str(work / "report.json"), "scene": str(scene), "layer_name": "T33UUU 2017-02-16",
              "outputs": str(out), "screenshots": str(shots), "timeout_s": 400}
    run = run_desktop(config, work / "session", timeout=420)
    report = run.report or {}
    if run.timed_out or report.get("stage") != "done" or not report.get("ok"):
        print(f"error: the QGIS session failed (stage {report.get('stage')}, exit {run.returncode}, "
              f"{run.seconds:.0f} s)\n{report.get('error', '')}\n{run.output[-3000:]}", file=sys.stderr)
        return 1
    for name in NAMES:
        shutil.copyfile(shots / name, outdir / name)
        print(f"wrote {outdir / name}")
    print(f"QGIS session: {run.seconds:.0f} s, of which mapping {report.get('run_seconds', 0):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
