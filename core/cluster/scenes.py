"""The bookkeeping of a batch (core.batch): which scenes the inputs name, their output names, which are already
done, the summary CSV and progress lines, how a task ended, and the per-scene markers that tell a retried scene
from a first try.

Inputs (each gives one or more scenes):
- a file: one scene (a GeoTIFF/VRT/JP2 stack, a SAFE .zip, or a product's MTD_MSIL1C/2A.xml);
- a folder that is itself a Sentinel-2 input: one scene. That is a folder named *.SAFE, one holding
  MTD_MSIL1C.xml/MTD_MSIL2A.xml, one holding band files named by band (..._B02.jp2, B8A.tif, ...), or one with
  no raster of its own but band files further down (a granule folder);
- any other folder: every raster (*.tif, *.tiff, *.vrt, *.jp2), *.zip and *.SAFE folder directly inside it, one
  scene each, in name order (not recursive: other sub-folders are left alone);
- `@list.txt`: one input per line as above (not another list); blank lines and lines starting with # are
  skipped; relative paths are relative to the list file's folder.

A scene's name (stem) is its file or folder name without the extension (and without .SAFE for SAFE products);
it names the outputs DIR/<stem>_hse.tif and DIR/<stem>_lcz.tif and the scene's summary row.
"""

from __future__ import annotations

import csv
import json
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

# The patterns core.inputs.scene recognises band files and product metadata by: one definition of each.
from ..common.atomic import atomic_write
from ..common.bands import BAND_FILE_RE as _BAND_FILE_RE, PRODUCT_XML_RE as _PRODUCT_XML_RE
from ..common.errors import Interrupted, UrbanMTLError

if TYPE_CHECKING:  # for the type hints only
    from ..mapping.predict import PredictOptions

SCENE_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".zip")
SUMMARY_NAME = "summary.csv"
COLUMNS = ("scene", "status", "worker", "seconds", "km2", "message")
#: Hidden folder in DIR for the markers of scenes being mapped (see claim_scene).
MARKER_DIR = ".urbanmtl-batch"


class BatchError(UrbanMTLError):
    """A problem with the batch's arguments: nothing is mapped, the CLI exits with status 2."""


@dataclass
class SceneJob:
    """One scene of a batch: its name, the input path given to predict_scene and its output paths."""

    stem: str
    source: str
    hse: str
    lcz: str


@dataclass
class Row:
    """A row of summary.csv. status: pending (not finished yet), done, skipped or failed."""

    scene: str
    status: str = "pending"
    worker: str = ""
    seconds: Optional[float] = None
    km2: Optional[float] = None
    message: str = ""

    def values(self) -> list[str]:
        return [self.scene, self.status, self.worker,
                "" if self.seconds is None else f"{self.seconds:.1f}",
                "" if self.km2 is None else f"{self.km2:.3f}", " ".join(self.message.split())]


# --- inputs ---


def scene_stem(path: Path) -> str:
    """The scene's name: the file or folder name without extension, .zip and .SAFE (X.SAFE.zip -> X)."""
    if path.is_file() and _PRODUCT_XML_RE.match(path.name):
        path = path.parent                     # a product's MTD_MSIL1C.xml: name it after its SAFE folder
    name = path.name
    for suffix in (".zip", ".safe"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[:-len(suffix)]
    if path.is_file() and name == path.name:
        name = path.stem
    return name


def _is_scene_folder(folder: Path) -> bool:
    """True when the folder is one Sentinel-2 input (a SAFE product or the band files of one granule)."""
    if folder.name.lower().endswith(".safe"):
        return True
    children = sorted(folder.iterdir())
    if any(c.is_file() and (_PRODUCT_XML_RE.match(c.name) or _BAND_FILE_RE.search(c.name)) for c in children):
        return True
    if any(_is_scene_entry(c) for c in children):
        return False
    return any(p.is_file() and _BAND_FILE_RE.search(p.name) for p in folder.rglob("*"))


def _is_scene_entry(path: Path) -> bool:
    if path.name.startswith("."):
        return False                           # hidden files: temporaries, lock files
    if path.is_dir():
        return path.name.lower().endswith(".safe")
    return path.suffix.lower() in SCENE_SUFFIXES


def expand_input(path: Path, out_dir: Path) -> list[Path]:
    """The scenes one input path names (see the module docstring)."""
    if not path.exists():
        raise BatchError(f"The input '{path}' does not exist. Check the path.")
    if not path.is_dir() or _is_scene_folder(path):
        return [path]
    scenes = [c for c in sorted(path.iterdir()) if _is_scene_entry(c)]
    if path.resolve() == out_dir.resolve():    # the outputs of this batch are no inputs
        scenes = [c for c in scenes if not c.name.endswith(("_hse.tif", "_lcz.tif"))]
    if not scenes:
        raise BatchError(
            f"The folder '{path}' holds no scene: no {', '.join('*' + s for s in SCENE_SUFFIXES)} file or *.SAFE "
            f"folder directly inside it, and it is not a Sentinel-2 SAFE folder or a folder of band files."
        )
    return scenes


def read_list_file(path: Path) -> list[Path]:
    """The inputs a list file names: one per line, # comments, relative to the file's folder."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BatchError(f"The list file '{path}' cannot be read ({exc.strerror or exc}).") from None
    entries = [line.strip() for line in lines]
    paths = [Path(e).expanduser() for e in entries if e and not e.startswith("#")]
    if any(str(p).startswith("@") for p in paths):
        raise BatchError(f"The list file '{path}' names another list ({next(p for p in paths if str(p)[0] == '@')}); "
                         f"list the inputs themselves.")
    return [p if p.is_absolute() else path.parent / p for p in paths]


def collect_scenes(inputs: Sequence[str], out_dir: Path) -> list[SceneJob]:
    """Every scene the inputs name, in order, with its outputs in out_dir. Raises BatchError for a missing input
    or list file, a folder without scenes, or two scenes with the same name (they would write the same files)."""
    paths: list[Path] = []
    for text in inputs:
        if text.startswith("@"):
            for entry in read_list_file(Path(text[1:]).expanduser()):
                paths += expand_input(entry, out_dir)
        else:
            paths += expand_input(Path(text).expanduser(), out_dir)
    jobs: list[SceneJob] = []
    seen: dict[str, Path] = {}
    for path in paths:
        stem = scene_stem(path)
        if stem in seen:
            raise BatchError(
                f"Two inputs have the same name '{stem}' and would write the same outputs "
                f"{out_dir / (stem + '_hse.tif')}: '{seen[stem]}' and '{path}'. Rename one, or map them in "
                f"separate batches with another --out-dir."
            )
        seen[stem] = path
        jobs.append(SceneJob(stem=stem, source=str(path.resolve()), hse=str(out_dir / f"{stem}_hse.tif"),
                             lcz=str(out_dir / f"{stem}_lcz.tif")))
    if not jobs:
        raise BatchError("No input scene was given. Pass rasters, SAFE folders or .zip files, folders of them, "
                         "or @list.txt.")
    return jobs


# --- outputs ---


def _readable(path: str) -> bool:
    import rasterio
    from rasterio.windows import Window

    try:
        with rasterio.open(path) as ds:
            ds.read(1, window=Window(0, ds.height - 1, ds.width, 1))     # the last row is there
        return True
    except Exception:
        return False


def outputs_state(job: SceneJob) -> str:
    """'complete' when both outputs exist and open and read to their last row; 'absent' when neither exists;
    'incomplete' otherwise (one is missing or damaged: an earlier run stopped between the two)."""
    present = [os.path.exists(p) for p in (job.hse, job.lcz)]
    if not any(present):
        return "absent"
    if all(present) and _readable(job.hse) and _readable(job.lcz):
        return "complete"
    return "incomplete"


def output_km2(hse_path: str) -> Optional[float]:
    """The area the HSE map covers, in km² (its 20 m grid), or None when it cannot be read."""
    import rasterio

    try:
        with rasterio.open(hse_path) as ds:
            return ds.width * ds.height * abs(ds.transform.a * ds.transform.e) / 1e6
    except Exception:
        return None


def write_summary(path: Path, rows: Sequence[Row]) -> None:
    """Write summary.csv atomically: a hidden temporary beside it, flushed, then renamed over it."""
    with atomic_write(path, tmp=path.with_name(f".{path.name}.{os.getpid()}.tmp"), fsync=True) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows(row.values() for row in rows)


def read_summary(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plan_rows(jobs: Sequence[SceneJob], options: "PredictOptions") -> tuple[list[Row], list[tuple]]:
    """A summary row per scene, and the scenes to map as (row index, job, options, note). Complete outputs are
    skipped (without --overwrite); incomplete ones that an earlier run left are replaced."""
    rows, todo = [], []
    for index, job in enumerate(jobs):
        rows.append(Row(job.stem))
        state = "absent" if options.overwrite else outputs_state(job)
        if state == "complete":
            rows[-1] = Row(job.stem, "skipped", seconds=0.0, km2=output_km2(job.hse),
                           message="outputs already there (--overwrite maps it again)")
        elif state == "incomplete":
            note = "replaced incomplete outputs of an earlier run."
            todo.append((index, job, replace(options, overwrite=True), note))
        else:
            todo.append((index, job, options, ""))
    return rows, todo


def progress_line(k: int, n: int, row: Row) -> str:
    if row.status == "done":
        area = f" ({row.km2:.2f} km²)" if row.km2 is not None else ""
        text = f"done in {row.seconds:.1f} s{area} on {row.worker}" + (f"; {row.message}" if row.message else "")
    elif row.status == "skipped":
        text = "skipped (outputs already there)"
    else:
        text = f"failed{' on ' + row.worker if row.worker else ''}: {row.message}"
    return f"[{k}/{n}] {row.scene}: {text}"


# --- messages ---


def failure_message(exc: BaseException) -> str:
    """The sentence `python -m core.predict` prints (after 'error: ') when a run ends with this exception."""
    if isinstance(exc, (UrbanMTLError, Interrupted)):
        return " ".join(str(exc).split())
    if isinstance(exc, MemoryError):
        return ("out of memory; no output was written. Use a smaller --tile-size or --batch-size, or close other "
                "programs.")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return (f"{exc.strerror or exc}{where}; no output was written. Check the disk space and the permissions of "
                f"the input and output folders.")
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return (f"unexpected {type(exc).__name__}: {first}; no output was written. This is a bug: run again with "
            f"URBANMTL_DEBUG=1 to see where it happened, and report it.")


# --- where and how a task ran ---


def cpu_count() -> int:
    affinity = getattr(os, "sched_getaffinity", None)      # Linux; Windows and macOS have none
    try:
        return len(affinity(0)) or 1 if affinity is not None else os.cpu_count() or 1
    except OSError:  # pragma: no cover
        return os.cpu_count() or 1


def worker_name() -> str:
    """The Dask worker's name (`dask worker --name`, or worker-N in a LocalCluster), else its address; outside
    a worker, host:pid."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"
    if isinstance(worker.name, int):
        return f"worker-{worker.name}"
    return str(worker.name) if worker.name not in (None, "") else str(worker.address)


def task_outcome(future) -> dict:
    """The task's result; failures of the cluster itself (not of the scene) as a failed row with their reason."""
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        message = ("the Dask workers mapping it kept dying (out of memory? see the worker logs) and the scheduler "
                   "gave up; no output was written.")
    except ImportError as exc:                       # a worker that joined after check_workers
        message = (f"its Dask worker cannot import the project ({exc}); no output was written. Start the workers "
                   f"with the project's Python environment and PYTHONPATH set to the project folder.")
    except CancelledError:
        message = ("its task was cancelled (the connection to the Dask scheduler was lost?); no output was written. "
                   "Run the same command again to map it.")
    except Exception as exc:
        message = failure_message(exc)
    return {"status": "failed", "message": message}


# --- markers of scenes in progress ---


def claim_scene(out_dir: Path, stem: str, batch_id: str, worker: str) -> Optional[str]:
    """Mark the scene as being mapped by `worker` in this batch. Returns the worker that had it before in the
    same batch (it died while mapping it: the scheduler gave the task to another worker), else None."""
    folder = Path(out_dir) / MARKER_DIR
    marker = folder / f"{stem}.json"
    previous = None
    try:
        old = json.loads(marker.read_text())
        if old.get("batch") == batch_id:
            previous = str(old.get("worker") or "?")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        folder.mkdir(exist_ok=True)
        with atomic_write(marker, tmp=folder / f".{stem}.{os.getpid()}.tmp") as tmp:
            tmp.write_text(json.dumps({"batch": batch_id, "worker": worker, "pid": os.getpid()}))
    except OSError:
        pass                                   # markers only improve the report; mapping goes on without them
    return previous


def release_scene(out_dir: Path, stem: str) -> None:
    try:
        (Path(out_dir) / MARKER_DIR / f"{stem}.json").unlink()
    except OSError:
        pass


def remove_marker_folder(out_dir: Path) -> None:
    """Remove DIR/.urbanmtl-batch when no scene is marked in it any more."""
    try:
        (Path(out_dir) / MARKER_DIR).rmdir()
    except OSError:
        pass
