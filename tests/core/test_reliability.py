"""Failure behaviour of mapping (README "Failure behaviour"): damaged inputs, inputs an output would destroy, values
that are not Sentinel-2 DN or reflectance, bad offsets, write failures (file-size limit), stop signals, killed runs,
concurrent runs, Ctrl-C during start-up and TensorFlow's start-up log lines.

Behaviour that is about exit codes and messages runs `python -m core.predict` as a real subprocess.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.transform import from_origin

from core.common.bands import MODEL_BANDS
from core.common.errors import InputError, OutputError, UrbanMTLError
from core.inputs.checks import DISPLAY_MESSAGE, assess_value_scale, check_offset
from core.network.saving import save_model
from core.mapping.predict import PredictOptions, predict_scene
from core.inputs.scene import Scene, open_scene
from tests.core.test_predict import pointwise_network
from tests.fakedata import write_raster

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
JP2_DIR = SHARED / "data" / "scene" / "IMG_DATA"
L1C = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
TEMP_RE = re.compile(r"^\..*\.[0-9a-f]{8}\.tmp(\.cog)?\.(tif|csv)(\.aux\.xml)?$")


# --- helpers: scenes, a tiny model, the CLI ---


def dn_scene(height: int, width: int, bands: int = 10, seed: int = 0) -> np.ndarray:
    """(bands, H, W) uint16 DN with smooth structure and noise, 600..6000 (realistic Sentinel-2 L1C values)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for k in range(bands):
        base = 0.5 + 0.3 * np.sin(x / (7.0 + k)) * np.cos(y / (5.0 + k)) + 0.1 * rng.standard_normal((height, width))
        out.append(np.clip(600 + 4000 * base, 600, 6000))
    return np.stack(out).astype(np.uint16)


def band_files(folder: Path, height: int = 48, width: int = 48) -> list[Path]:
    """Single-band GeoTIFFs of one 'granule', named by band (…_B02.tif), on their native grids."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(L1C):
        res = {"B2": 10, "B3": 10, "B4": 10, "B8": 10, "B1": 60, "B9": 60, "B10": 60}.get(name, 20)
        data = np.full((1, height * 10 // res, width * 10 // res), 1000 + 100 * k, np.uint16)
        label = "B8A" if name == "B8A" else f"B{int(name[1:]):02d}"
        path = folder / f"T33UUU_20220301T101101_{label}.tif"
        paths.append(write_raster(path, data, transform=from_origin(330000, 5822040, res, res)))
    return paths


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("model")
    return str(save_model(pointwise_network(), root / "model.keras", {"bands": list(MODEL_BANDS)}))


@pytest.fixture(scope="module")
def long_scene(tmp_path_factory) -> str:
    """A scene that takes seconds to map with --tile-size 16 --overlap 0 --batch-size 1 (1024 tiles)."""
    return str(write_raster(tmp_path_factory.mktemp("long") / "long.tif", dn_scene(512, 512)))


LONG_RUN = ["--tile-size", "16", "--overlap", "0", "--batch-size", "1"]


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "core.predict", *[str(a) for a in args]]


def cli(*args: str, env: Optional[dict] = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else dict(os.environ), **kwargs)


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(cli_command(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int, *patterns: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    for pattern in patterns:
        assert re.search(pattern, lines[0], re.IGNORECASE), (pattern, lines[0])


def temporaries(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if TEMP_RE.match(n)) if folder.exists() else []


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (status {proc.returncode}) before the expected moment:\n"
                                 f"{proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.005)


def read1(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


# --- 1, 2: damaged or incomplete inputs ---


def test_truncated_geotiff_is_damaged_input(tmp_path, model):
    src = write_raster(tmp_path / "scene.tif", dn_scene(200, 200, bands=13))
    data = src.read_bytes()
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    proc = cli(bad, "--hse", out / "hse.tif", "--lcz", out / "lcz.tif", "--model", model)
    assert_clean_failure(proc, 2, r"the input is damaged or incomplete: 'truncated\.tif', ",
                         r"TIFFReadEncodedStrip|IReadBlock", "download it again")
    assert not out.exists() or os.listdir(out) == []


def test_read_failure_during_the_tiles_is_damaged_input(tmp_path, model, monkeypatch):
    src = write_raster(tmp_path / "scene.tif", dn_scene(64, 64))
    real_read = Scene.read
    calls = []

    def failing_read(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise RasterioIOError("Read or write failed. scene.tif, band 1: IReadBlock failed at X offset 0")
        return real_read(self, *args)

    monkeypatch.setattr(Scene, "read", failing_read)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"damaged or incomplete: 'scene\.tif', scene\.tif, band 1: IReadBlock"):
        predict_scene(str(src), str(out / "hse.tif"), str(out / "lcz.tif"), model_path=model,
                      options=PredictOptions(tile_size=16, overlap=0, batch_size=1))
    assert os.listdir(out) == []


def build_vrt(vrt: Path, sources: Sequence[Path]) -> Path:
    from osgeo import gdal

    ds = gdal.BuildVRT(str(vrt), [str(s) for s in sources])
    ds.FlushCache()
    del ds                                       # closing writes the file
    return vrt


def test_vrt_with_a_missing_source_names_it(tmp_path, model):
    (tmp_path / "data").mkdir()
    src = write_raster(tmp_path / "data" / "bands.tif", dn_scene(40, 40, bands=13), descriptions=L1C)
    vrt = build_vrt(tmp_path / "scene.vrt", [src])
    src.unlink()
    out = tmp_path / "out"
    proc = cli(vrt, "--hse", out / "hse.tif", "--lcz", out / "lcz.tif", "--model", model)
    assert_clean_failure(proc, 2, r"the input is damaged or incomplete: 'scene\.vrt'",
                         re.escape(str(src)), "does not exist", "gdalbuildvrt")
    assert not out.exists() or os.listdir(out) == []


# --- 3, 4: an output may never be a file the input reads ---


def test_output_may_not_replace_the_source_of_an_input_vrt(tmp_path, model):
    src = write_raster(tmp_path / "bands.tif", dn_scene(40, 40, bands=13), descriptions=L1C)
    before = src.read_bytes()
    vrt = build_vrt(tmp_path / "scene.vrt", [src])
    proc = cli(vrt, "--hse", src, "--lcz", tmp_path / "lcz.tif", "--model", model, "--overwrite")
    assert_clean_failure(proc, 2, r"the hse output .*bands\.tif.* a file the input reads",
                         "other names or another folder")
    assert src.read_bytes() == before
    assert not (tmp_path / "lcz.tif").exists() and temporaries(tmp_path) == []


@pytest.mark.parametrize("how", ["link_to_source", "nested_vrt", "relative_source"])
def test_output_may_not_replace_a_file_behind_the_input(tmp_path, model, how):
    (tmp_path / "data").mkdir()
    src = write_raster(tmp_path / "data" / "bands.tif", dn_scene(40, 40, bands=13), descriptions=L1C)
    before = src.read_bytes()
    vrt = build_vrt(tmp_path / "data" / "scene.vrt", [src])
    source, target = vrt, src
    if how == "link_to_source":                  # the output is a symbolic link to the VRT's source
        target = tmp_path / "alias.tif"
        target.symlink_to(src)
    elif how == "nested_vrt":                    # a VRT of a VRT
        source = build_vrt(tmp_path / "outer.vrt", [vrt])
    else:                                        # relativeToVRT="1" and the output named by another path
        assert 'relativeToVRT="1"' in vrt.read_text()
        target = tmp_path / "data" / ".." / "data" / "bands.tif"
    with pytest.raises(OutputError, match="a file the input reads"):
        predict_scene(str(source), str(target), str(tmp_path / "lcz.tif"), model_path=model,
                      options=PredictOptions(overwrite=True))
    assert src.read_bytes() == before


@pytest.mark.parametrize("band", ["B02", "B01"])
def test_output_may_not_replace_a_band_file_of_the_input_folder(tmp_path, model, band):
    paths = band_files(tmp_path / "IMG_DATA")
    target = next(p for p in paths if p.name.endswith(f"_{band}.tif"))   # B01: in the folder, unused by the model
    before = target.read_bytes()
    proc = cli(tmp_path / "IMG_DATA", "--hse", target, "--lcz", tmp_path / "lcz.tif", "--model", model,
               "--overwrite")
    assert_clean_failure(proc, 2, rf"the hse output .*_{band}\.tif.* a file the input reads")
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path / "IMG_DATA")) == sorted(p.name for p in paths)


@pytest.mark.skipif(not JP2_DIR.exists(), reason="../shared data absent")
def test_output_may_not_replace_a_band_file_of_a_safe_product(tmp_path, model):
    from tests.core.test_raster import make_fake_safe

    safe = make_fake_safe(tmp_path)
    jp2 = next(safe.rglob("*_B04.jp2"))
    link = tmp_path / "hse.tif"
    link.symlink_to(jp2)                          # the output name leads to a band file of the product
    with pytest.raises(OutputError, match="a file the input reads"):
        predict_scene(str(safe), str(link), str(tmp_path / "lcz.tif"), model_path=model,
                      options=PredictOptions(overwrite=True, extent=(333000, 5816000, 333200, 5816200)))
    assert link.is_symlink() and os.path.realpath(link) == os.path.realpath(jp2)


# --- 5, 6, 7: the value scale of the input ---


def test_8bit_display_values_are_refused(tmp_path, model):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (13, 60, 60)).astype(np.uint8)       # a colour-stretched 13-band export
    src = write_raster(tmp_path / "display.tif", data)
    out = tmp_path / "out"
    proc = cli(src, "--hse", out / "hse.tif", "--lcz", out / "lcz.tif", "--model", model)
    assert_clean_failure(proc, 2, re.escape(DISPLAY_MESSAGE), "display.tif", "original bands")
    assert not out.exists() or os.listdir(out) == []


@pytest.mark.parametrize("dtype,values", [
    ("uint8", (0, 255)), ("uint16", (0, 255)), ("int16", (3, 250)), ("float32", (0, 255)),
])
def test_display_values_of_any_type_are_refused(dtype, values):
    sample = np.random.default_rng(1).integers(*values, (10, 50, 50)).astype(dtype)
    if dtype == "float32":
        sample = sample + np.float32(0.25)           # a resampled rendering: not whole numbers any more
    with pytest.raises(InputError, match=re.escape(DISPLAY_MESSAGE)):
        assess_value_scale(dtype, sample, name="'x.tif'")


@pytest.mark.parametrize("dtype,scale,kind,divisor", [
    ("uint16", 1, "dn", 10000), ("int16", 1, "dn", 10000), ("float32", 1, "dn", 10000),
    ("float32", 1e-4, "reflectance", 1), ("float64", 1e-4, "reflectance", 1), ("float32", 1e-2, "percent", 100),
])
def test_value_scale_decisions(dtype, scale, kind, divisor):
    dn = dn_scene(40, 40).astype(np.float64)
    verdict = assess_value_scale(dtype, (dn * scale).astype(dtype), np.ones((40, 40), bool))
    assert (verdict.kind, verdict.divisor, verdict.use_offset) == (kind, divisor, kind == "dn")
    assert (verdict.message is None) == (kind == "dn")


def test_value_scale_with_an_explicit_offset():
    refl = dn_scene(20, 20).astype(np.float32) / 10000
    assert assess_value_scale("float32", refl, explicit_offset=0.0).kind == "reflectance"
    with pytest.raises(InputError, match="look like reflectance.*Leave the offset out"):
        assess_value_scale("float32", refl, explicit_offset=-1000.0)
    # The user says "DN": no percent guess (a dark float DN scene stays DN).
    assert assess_value_scale("float32", refl * 100, explicit_offset=0.0).kind == "dn"
    with pytest.raises(InputError, match=re.escape(DISPLAY_MESSAGE)):
        assess_value_scale("uint8", np.full((10, 4, 4), 90, np.uint8), explicit_offset=0.0)


@pytest.mark.parametrize("kind", ["reflectance", "percent"])
def test_reflectance_and_percent_give_the_maps_of_dn(tmp_path, model, kind):
    """Row 7 (reflectance 0..1, mapped as DN / 10000 before this issue too) and row 6 (percent: was a wrong map)."""
    dn = dn_scene(60, 80)
    values = (dn / 10000).astype(np.float32) if kind == "reflectance" else (dn / 100).astype(np.float32)
    maps = []
    for name, data in (("dn", dn), (kind, values)):
        src = write_raster(tmp_path / f"{name}.tif", data)
        result = predict_scene(str(src), str(tmp_path / name / "hse.tif"), str(tmp_path / name / "lcz.tif"),
                               model_path=model)
        maps.append((read1(result.hse_path), read1(result.lcz_path), " ".join(result.messages)))
    (hse_dn, lcz_dn, _), (hse, lcz, messages) = maps
    np.testing.assert_allclose(hse, hse_dn, atol=1e-5)
    np.testing.assert_array_equal(lcz, lcz_dn)
    if kind == "reflectance":
        assert "reflectance already" in messages
    else:
        assert "reflectance in percent" in messages and "divided by 100" in messages


def test_open_scene_records_the_value_scale(tmp_path):
    src = write_raster(tmp_path / "pct.tif", (dn_scene(30, 30) / 100).astype(np.float32))
    with open_scene(src) as scene:
        assert scene.value_scale.kind == "percent" and scene.scale == 100
        assert np.all(scene.offsets == 0)
        image, valid = scene.read(0, 0, 30, 30)
    np.testing.assert_allclose(image[valid].mean(), dn_scene(30, 30).mean() / 10000, rtol=1e-4)


# --- 8: offsets ---


@pytest.mark.parametrize("offset", ["nan", "inf", "-1e9"])
def test_unusable_offset_is_refused(tmp_path, model, offset):
    src = write_raster(tmp_path / "scene.tif", dn_scene(30, 30))
    out = tmp_path / "out"
    proc = cli(src, "--hse", out / "hse.tif", "--lcz", out / "lcz.tif", "--model", model, f"--offset={offset}")
    assert_clean_failure(proc, 2, r"--offset", "finite number", "-1000")
    assert not out.exists()


def test_unusable_offsets_from_metadata_are_refused(tmp_path):
    src = tmp_path / "scene.tif"
    write_raster(src, dn_scene(20, 20))
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(RADIO_ADD_OFFSET="nan")
    with pytest.raises(InputError, match="DN offsets of 'scene.tif' are not usable"):
        with open_scene(src):
            pass
    assert check_offset(-1000) == -1000.0
    with pytest.raises(UrbanMTLError):
        check_offset(float("nan"))


# --- 9: write failures (a file-size limit stands in for a full disk) ---


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.parametrize("stage", ["early", "late", "cog"])
def test_write_failure_is_an_error_and_leaves_nothing(tmp_path, model, stage):
    # 600 x 520 px: the HSE map is 300 rows, one block row of 256 stored while mapping, the rest at the end.
    src = write_raster(tmp_path / "scene.tif", dn_scene(600, 520, seed=3))

    def hse_size(**options) -> int:
        ref = tmp_path / f"ref{len(options)}"
        result = predict_scene(str(src), str(ref / "hse.tif"), str(ref / "lcz.tif"), model_path=model,
                               options=PredictOptions(**options))
        return Path(result.hse_path).stat().st_size

    extra = []
    if stage == "early":
        limit = 16_000                                   # the first block row of the HSE map does not fit
    elif stage == "late":                                # all fits but the last few kB, written when closing
        limit = hse_size() - 2_000
    else:                                                # the GeoTIFF fits, its COG copy (with overviews) not
        limit = (hse_size() + hse_size(cog=True)) // 2
        extra = ["--cog"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "hse.tif").write_bytes(b"an earlier result")  # --overwrite may replace it, a failure may not
    proc = cli(src, "--hse", out / "hse.tif", "--lcz", out / "lcz.tif", "--confidence", out / "conf.tif",
               "--stats", out / "stats.csv", "--model", model, "--overwrite", *extra,
               preexec_fn=_limit_file_size(limit))
    assert_clean_failure(proc, 2, r"writing the hse output .*hse\.tif' failed", "file-size limit",
                         "no file was written under the output names", "free some disk space")
    assert sorted(os.listdir(out)) == ["hse.tif"] and (out / "hse.tif").read_bytes() == b"an earlier result"


# --- 10: stop signals and killed runs ---


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_mid_run_removes_the_temporaries(tmp_path, model, long_scene, signum):
    out = tmp_path / "out"
    proc = start_cli(long_scene, "--hse", out / "hse.tif", "--lcz", out / "lcz.tif", "--confidence",
                     out / "conf.tif", "--model", model, *LONG_RUN)
    wait_for(lambda: len(temporaries(out)) == 3, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr, stderr
    assert error_lines(stderr) == [f"error: interrupted ({signal.Signals(signum).name}); no output was written."]
    assert os.listdir(out) == []                 # no temporary, no output, no lock file


def test_next_run_removes_the_temporaries_of_a_killed_run(tmp_path, model, long_scene):
    out = tmp_path / "out"
    outputs = ["--hse", out / "hse.tif", "--lcz", out / "lcz.tif"]
    proc = start_cli(long_scene, *outputs, "--model", model, *LONG_RUN)
    wait_for(lambda: len(temporaries(out)) == 2, proc)
    proc.kill()                                  # SIGKILL: no handler runs
    proc.communicate(timeout=60)
    stale = temporaries(out)
    assert len(stale) == 2
    unrelated = out / ".other.0123abcd.tmp.tif"  # a temporary of other output names: not ours to remove
    unrelated.write_bytes(b"x")
    small = write_raster(tmp_path / "small.tif", dn_scene(40, 40))
    done = cli(small, *outputs, "--model", model)
    assert done.returncode == 0, done.stderr
    assert "Removed 2 temporary file(s)" in done.stderr
    assert sorted(os.listdir(out)) == [".other.0123abcd.tmp.tif", "hse.tif", "lcz.tif", "lcz.tif.aux.xml"]


def test_stop_signal_during_the_renames_lets_them_finish(tmp_path, monkeypatch):
    """The CLI's handler defers a signal that comes while outputs are renamed into place: all of them get there."""
    import core.outputs as outputs
    from core.common.errors import Interrupted
    from core.predict import _stop

    grid20 = outputs.GridSpec(10, 10, from_origin(330000, 5822040, 20, 20), "EPSG:32633")
    grid100 = outputs.GridSpec(2, 2, from_origin(330000, 5822040, 100, 100), "EPSG:32633")
    plan = plan_outputs_for(tmp_path)
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            _stop(signal.SIGTERM, None)          # as if SIGTERM arrived now
        real_replace(src, dst)

    with pytest.raises(Interrupted, match="after the outputs were complete") as info:
        with outputs.OutputSet(plan, grid20, grid100) as out:
            out.write("hse", 0, np.zeros((10, 10), np.float32))
            out.write("lcz", 0, np.ones((2, 2), np.uint8))
            monkeypatch.setattr(os, "replace", replace)
            out.commit([])
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert sorted(os.listdir(tmp_path / "o")) == ["hse.tif", "lcz.tif", "lcz.tif.aux.xml", "stats.csv"]


def test_stop_signal_during_a_tensorflow_call_stops_right_after_it():
    """A stop signal while TensorFlow's C++ runs (it calls back into Python) is deferred to the end of the call:
    raised inside, TensorFlow turned it into a SystemError and printed a traceback (seen in CI, 1 run in 4)."""
    from core.common.errors import Interrupted
    from core.common.signals import signals_deferred
    from core.predict import _stop

    reached = []
    with pytest.raises(Interrupted, match=r"^interrupted \(SIGINT\); no output was written\.$") as info:
        with signals_deferred():
            _stop(signal.SIGINT, None)           # as if Ctrl-C arrived inside the call
            reached.append("end of the call")
    assert reached == ["end of the call"]
    assert info.value.exit_code == 130


def plan_outputs_for(tmp_path: Path):
    from core.outputs import plan_outputs

    o = tmp_path / "o"
    return plan_outputs(str(o / "hse.tif"), str(o / "lcz.tif"), stats_path=str(o / "stats.csv"))


# --- concurrent runs ---


def test_second_run_on_the_same_outputs_is_refused(tmp_path, model, long_scene):
    out = tmp_path / "out"
    first = start_cli(long_scene, "--hse", out / "hse.tif", "--lcz", out / "lcz.tif", "--model", model, *LONG_RUN)
    wait_for(lambda: len(temporaries(out)) == 2, first)
    first.send_signal(signal.SIGSTOP)            # hold the first run mid-way, however fast this machine is
    try:
        # Another run with one output name in common, even with --overwrite.
        second = cli(long_scene, "--hse", out / "other_hse.tif", "--lcz", out / "lcz.tif", "--model", model,
                     "--overwrite")
    finally:
        first.send_signal(signal.SIGCONT)
    assert_clean_failure(second, 2, rf"another urbanmtl run \(process {first.pid}\) is writing '.*lcz\.tif'",
                         "wait for it to finish, or choose other output names")
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert sorted(os.listdir(out)) == ["hse.tif", "lcz.tif", "lcz.tif.aux.xml"]


def test_output_lock_in_process(tmp_path, model):
    from core.outputs import OutputLock, plan_outputs

    src = write_raster(tmp_path / "scene.tif", dn_scene(30, 30))
    plan = plan_outputs(str(tmp_path / "o" / "hse.tif"), str(tmp_path / "o" / "lcz.tif"))
    with OutputLock(plan) as lock:
        assert lock.acquired and (tmp_path / "o" / ".hse.tif.urbanmtl-lock").exists()
        with pytest.raises(OutputError, match="is writing"):        # e.g. two QGIS tasks at once
            predict_scene(str(src), str(tmp_path / "o" / "hse.tif"), str(tmp_path / "o" / "lcz.tif"),
                          model_path=model)
    assert not (tmp_path / "o").exists()          # the lock made the folder; nothing was written there
    predict_scene(str(src), str(tmp_path / "o" / "hse.tif"), str(tmp_path / "o" / "lcz.tif"), model_path=model)
    assert sorted(os.listdir(tmp_path / "o")) == ["hse.tif", "lcz.tif", "lcz.tif.aux.xml"]


# --- start-up: Ctrl-C while TensorFlow loads, TensorFlow's log lines ---


def test_ctrl_c_while_tensorflow_imports_is_one_line(tmp_path, model):
    src = write_raster(tmp_path / "scene.tif", dn_scene(30, 30))
    proc = start_cli(src, "--hse", tmp_path / "hse.tif", "--lcz", tmp_path / "lcz.tif", "--model", model,
                     "--runtime", "tensorflow")

    def tensorflow_loading() -> bool:
        try:
            return "tensorflow" in Path(f"/proc/{proc.pid}/maps").read_text()
        except OSError:
            return False

    wait_for(tensorflow_loading, proc, timeout=120)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    # TensorFlow loads once the run has chosen it (core.mapping.networks): the run's own handler reports the stop.
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted (SIGINT)") and "no output was written" in last, stderr
    assert sorted(os.listdir(tmp_path)) == ["scene.tif"]


def test_cli_start_prints_no_tensorflow_info_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    proc = cli(tmp_path / "missing.tif", "--hse", tmp_path / "h.tif", "--lcz", tmp_path / "l.tif", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: The input '{tmp_path / 'missing.tif'}' does not exist. "
                                                f"Check the path."]
