"""Screenshots of the plugin in a real QGIS desktop session under Xvfb (with GLX), for the README.

    .venv/bin/python -m tools.screenshots [--out docs] [--keep WORKDIR]

Starts /usr/bin/qgis as tests/desktop does (tests/desktop/harness.py, session script qgis_session.py), on a
512 x 512 px crop of the real Sentinel-2 scene in ../shared/data (the lake and villages east of the scene's
centre), with the bundled model, and saves:

- qgis_dialog.png      the algorithm's dialog, opened from Raster > urbanmtl, with its help panel;
- qgis_result.png      the styled result in the map canvas, the Layers panel with the LCZ legend;
- qgis_result_hse.png  the same with the LCZ layer hidden: HSE density over the image (0 is transparent).

Needs xvfb-run (apt-get install xvfb xauth) and the venv (make venv). Takes about a minute.
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

from tests.desktop.harness import crop_scene, desktop_available, run_desktop, scene_available  # noqa: E402

NAMES = ("qgis_dialog.png", "qgis_result.png", "qgis_result_hse.png")
#: Upper-left (row, column) and size of the crop, in 10 m pixels of the T33UUU scene.
CROP = (256, 1024, 512, 512)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNG files (docs)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    problem = desktop_available() or (None if scene_available() else "../shared/data/scene is missing")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="urbanmtl-screenshots-"))
    try:
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
        args.out.mkdir(parents=True, exist_ok=True)
        for name in NAMES:
            shutil.copyfile(shots / name, args.out / name)
            print(f"wrote {args.out / name}")
        print(f"QGIS session: {run.seconds:.0f} s, of which mapping {report.get('run_seconds', 0):.0f} s")
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
