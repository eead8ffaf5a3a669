"""`make demo`: map a real city through the real `qgis_process.bin` with the bundled model.

Steps: (1) copy the Sentinel-2 L1C crop of Montpellier (30 Oct 2017, 19.5 km², Copernicus Sentinel data) that ships in
data/demo (data/demo/README.md: one of the 19 sites the bundled model v5 trained on, with another date; the model card's
leave-region-out figures say how it maps a city it has not seen) into demo/scene/; (2) run the plugin's algorithm
`urbanmtl:map_hse_lcz` through `/usr/bin/qgis_process.bin` with the bundled model; (3) print the per-class area
table and draw the figure (true colour, HSE with a colour bar, LCZ with its legend) and, where ../shared has the
teacher's labels of the city, image / teacher LCZ / our LCZ side by side. Everything is written into demo/
(git-ignored). Nothing is downloaded.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.common.errors import UrbanMTLError

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "data" / "demo"
CITIES = ROOT.parent / "shared" / "data" / "cities"
DEMO_CITY = "montpellier_20171030"
ATTRIBUTION = "Contains modified Copernicus Sentinel data 2017 (OSCD crop of Montpellier, 30 Oct 2017)."
QGIS_PROCESS = "/usr/bin/qgis_process.bin"


def city_scene(out: Path) -> Path:
    """The demo city's 10-band GeoTIFF (data/demo), copied into out/ with the Copernicus attribution beside it."""
    out.mkdir(parents=True, exist_ok=True)
    source = DEMO_DIR / f"{DEMO_CITY}_S2L1C_10band.tif"
    if not source.exists():
        raise UrbanMTLError(f"The demo scene {source} is missing from this checkout; restore it with "
                            f"'git checkout -- data/demo'.")
    target = out / source.name
    shutil.copyfile(source, target)
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION + "\n")
    return target


def qgis_process_env(plugin_root: Path, home: Path) -> dict[str, str]:
    """Environment for qgis_process.bin: a throw-away HOME, the plugin on QGIS_PLUGINPATH under its name
    `urbanmtl`, and the venv's site-packages (TensorFlow) on PYTHONPATH."""
    plugins = home / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "urbanmtl"
    if not link.exists():
        link.symlink_to(plugin_root, target_is_directory=True)
    site = [p for p in sys.path if p.endswith("site-packages") and str(ROOT) in p]
    env = dict(os.environ, HOME=str(home), QGIS_PLUGINPATH=str(plugins), QT_QPA_PLATFORM="offscreen",
               TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(site + [env.get("PYTHONPATH", "")]).strip(os.pathsep)
    return env


def run_qgis_algorithm(params: dict[str, str], env: dict[str, str]) -> subprocess.CompletedProcess:
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "urbanmtl"], env=env, check=True, capture_output=True)
    args = [QGIS_PROCESS, "run", "urbanmtl:map_hse_lcz", "--"] + [f"{k}={v}" for k, v in params.items()]
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise UrbanMTLError(f"qgis_process failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n"
                            f"{result.stderr[-3000:]}")
    return result


def area_table(stats_csv: Path) -> str:
    """The per-class area table of the stats CSV, classes present only, largest first."""
    with open(stats_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["cells"]) > 0]
    rows.sort(key=lambda r: -float(r["area_km2"]))
    total = sum(float(r["area_km2"]) for r in rows) or 1.0
    lines = [f"{'LCZ':>3}  {'class':<22} {'km²':>8} {'share':>7} {'mean HSE':>9}"]
    for r in rows:
        mean = r.get("mean_hse") or ""
        mean = f"{float(mean):.2f}" if mean else ""
        lines.append(f"{r['letter']:>3}  {r['name']:<22} {float(r['area_km2']):8.2f} "
                     f"{100 * float(r['area_km2']) / total:6.1f}% {mean:>9}")
    return "\n".join(lines)


def teacher_comparison(scene: Path, lcz: Path, png: Path) -> Path:
    """Image, teacher LCZ and our LCZ side by side (the teacher's 20 m probabilities averaged per 100 m cell)."""
    import rasterio

    from core.data import load_manifest
    from core.evaluation.maps import reference_lcz_cells

    from .figure import teacher_figure

    spec = load_manifest(CITIES / f"{DEMO_CITY}.yaml")
    with rasterio.open(lcz) as grid:
        teacher = reference_lcz_cells(spec, grid)
    return teacher_figure(scene, teacher, lcz, png, "Montpellier, 30 Oct 2017")


def main() -> int:
    out = ROOT / "demo"
    out.mkdir(exist_ok=True)
    timings = {}
    figures = []
    try:
        t = time.time()
        scene = city_scene(out / "scene")
        rgb_source, title = scene, "Montpellier, 30 Oct 2017"
        teacher = (CITIES / f"{DEMO_CITY}.yaml").exists()
        timings["copy the Montpellier crop from data/demo"] = time.time() - t
        t = time.time()
        outputs = {"OUTPUT_HSE": out / "hse.tif", "OUTPUT_LCZ": out / "lcz.tif", "OUTPUT_STATS": out / "lcz_stats.csv"}
        for path in outputs.values():
            path.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory() as home:
            run_qgis_algorithm({"INPUT": str(scene), **{k: str(v) for k, v in outputs.items()}},
                               qgis_process_env(ROOT, Path(home)))
        timings["map HSE and LCZ with qgis_process.bin (bundled model)"] = time.time() - t
        t = time.time()
        from .figure import demo_figure

        figures.append(demo_figure(rgb_source, outputs["OUTPUT_HSE"], outputs["OUTPUT_LCZ"], out / "demo.png",
                                   title))
        if teacher:
            figures.append(teacher_comparison(scene, outputs["OUTPUT_LCZ"], out / "teacher_vs_urbanmtl.png"))
        timings["draw the figures"] = time.time() - t
    except UrbanMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Area per Local Climate Zone ({title}):")
    print(area_table(outputs["OUTPUT_STATS"]))
    print(ATTRIBUTION)
    for step, seconds in timings.items():
        print(f"{seconds:7.1f} s  {step}")
    print("Wrote:")
    for path in [*outputs.values(), *figures]:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
