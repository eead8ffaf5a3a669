"""Map many Sentinel-2 scenes on a Dask cluster: one task per scene, each running core.predict.predict_scene.

    python -m core.batch INPUT... --out-dir DIR [--scheduler tcp://host:8786] [--workers N]
        [--threads-per-worker N] [--model M] [--overwrite] [--device auto|cpu|gpu] [--tile-size ...] ...

For every scene (core.batch_io says which inputs name which scenes) a worker writes DIR/<stem>_hse.tif and
DIR/<stem>_lcz.tif, exactly what `python -m core.predict SCENE --hse ... --lcz ...` writes with the same flags
(atomically: temporary names, then renames). DIR/summary.csv (scene,status,worker,seconds,km2,message) is
rewritten atomically after every scene. Scenes whose outputs are already complete are skipped (unless
--overwrite), so running the same command again resumes an interrupted batch. A failed scene never stops the
others. Without --scheduler a distributed.LocalCluster is started on this machine.

On a worker the model is loaded once per process (install_model_cache), not once per scene, and never travels
with the tasks: workers read the model, the inputs and DIR from storage that they and the client share.

Exit status: 0 every scene done or skipped; 1 some scene failed (all others were mapped); 2 bad arguments
(nothing mapped); 128 + signal number when stopped.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Before the imports below load TensorFlow: keep its start-up INFO lines quiet (as core.predict does).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import argparse
import importlib.util
import logging
import signal
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from . import predict as _predict
from .batch_io import (
    SUMMARY_NAME, BatchError, Row, SceneJob, claim_scene, collect_scenes, cpu_count, failure_message, output_km2,
    plan_rows, progress_line, release_scene, remove_marker_folder, task_outcome, worker_name, write_summary,
)
from .errors import Interrupted, UrbanMTLError
from .model import resolve_model_path
from .predict import PredictOptions, predict_scene, validate_options

#: The flags of core.predict a batch passes on to every scene: parsed exactly as there (types, choices, defaults).
PREDICT_FLAGS = ("--model", "--bands", "--tile-size", "--overlap", "--batch-size", "--device", "--offset",
                 "--overwrite", "--cog", "--scheme")
#: A task that raises is run once more; a task whose worker dies is given to another worker by the scheduler
#: (up to its distributed.scheduler.allowed-failures, default 3) and reported as retried.
RETRIES = 1
#: Seconds to wait for --scheduler to answer, and for every worker to import the project.
CONNECT_TIMEOUT_S = 15
PROBE_TIMEOUT_S = 300
#: What the scheduler sees of a task: functions pickled by value (lambdas) and plain values. The scheduler
#: unpickles task graphs, so it never has to import the project (nor TensorFlow); the worker imports core.batch.
_PROBE = lambda: __import__("importlib").import_module("core.batch").__name__  # noqa: E731
_TASK = lambda *args: __import__("importlib").import_module("core.batch").run_task(*args)  # noqa: E731

# --- on the worker ---

_LOCK = threading.Lock()
_MODELS: dict = {}
_RUNNERS: dict = {}
_installed = False


def _configure_threads() -> None:
    """Apply TF_NUM_INTRAOP_THREADS through tf.config too, when TensorFlow has not started yet."""
    threads = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass                                     # TensorFlow already runs; it read the variable itself


def install_model_cache() -> None:
    """Make predict_scene in this process load each model once and trace its network call once.

    core.predict loads the model (its _load) and wraps it in a NetworkRunner (a traced tf.function) for every
    scene; on a worker that maps scene after scene, both are kept per process instead, keyed by the model
    file (path, modification time, size) and device. Only one model is kept at a time.
    """
    global _installed
    with _LOCK:
        if _installed:
            return
        _configure_threads()
        load, runner_class = _predict._load, _predict.NetworkRunner

        def cached_load(model_path, device):
            path = resolve_model_path(model_path)
            stat = path.stat()
            key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, device)
            with _LOCK:
                if key not in _MODELS:
                    _MODELS.clear()
                    _RUNNERS.clear()
                    _MODELS[key] = load(model_path, device)
                return _MODELS[key]

        def cached_runner(network, device):
            with _LOCK:
                key = (id(network), device)
                if key not in _RUNNERS:
                    _RUNNERS[key] = runner_class(network, device)
                return _RUNNERS[key]

        _predict._load = cached_load
        _predict.NetworkRunner = cached_runner
        _installed = True


def run_task(job: dict, model_path: str, options: dict, batch_id: str, out_dir: str) -> dict:
    """map_scene from the plain values a task carries (see _TASK)."""
    return map_scene(SceneJob(**job), model_path, PredictOptions(**options), batch_id, out_dir)


def map_scene(job: SceneJob, model_path: str, options: PredictOptions, batch_id: str, out_dir: str) -> dict:
    """The task of one scene: map it with predict_scene. Never raises: a failure comes back as status 'failed'
    with the sentence core.predict would print. Returns status, worker, seconds, km2 and message."""
    start = time.perf_counter()
    worker = worker_name()
    previous = claim_scene(Path(out_dir), job.stem, batch_id, worker)
    notes = [f"retried: worker {previous} stopped while mapping it."] if previous else []
    status, km2 = "failed", None
    try:
        install_model_cache()
        predict_scene(job.source, job.hse, job.lcz, model_path=model_path, options=options)
        status, km2 = "done", output_km2(job.hse)
    except Exception as exc:
        if os.environ.get("URBANMTL_DEBUG") and not isinstance(exc, UrbanMTLError):
            import traceback

            traceback.print_exc()
        notes.append(failure_message(exc))
    finally:
        release_scene(Path(out_dir), job.stem)
    return {"status": status, "worker": worker, "seconds": time.perf_counter() - start, "km2": km2,
            "message": " ".join(notes)}


# --- on the client ---


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.batch",
        description="Map HSE density and Local Climate Zones for many Sentinel-2 scenes on a Dask cluster (a local "
                    "one by default): DIR/<scene>_hse.tif, DIR/<scene>_lcz.tif and DIR/summary.csv.",
        epilog="Exit status: 0 all done or skipped, 1 some scene failed, 2 bad arguments.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a scene (raster, SAFE folder or .zip, folder of band files), a folder of scenes, or "
                        "@LIST.txt (one input per line, # comments)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="folder for the outputs and summary.csv")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of a running Dask scheduler, e.g. tcp://host:8786 (default: start a local cluster)")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="local cluster: worker processes (default: one per 2 CPU cores, at least 1)")
    p.add_argument("--threads-per-worker", type=_positive_int, default=1, metavar="N",
                   help="local cluster: scenes each worker maps at once (1)")
    flags = {option: action for action in _predict.build_parser()._actions for option in action.option_strings}
    for flag in PREDICT_FLAGS:
        p._add_action(flags[flag])
    return p


def options_from(args: argparse.Namespace) -> PredictOptions:
    return PredictOptions(bands=args.bands, tile_size=args.tile_size, overlap=args.overlap,
                          batch_size=args.batch_size, device=args.device, overwrite=args.overwrite, cog=args.cog,
                          scheme=args.scheme, offset=args.offset)


def prepare(args: argparse.Namespace) -> tuple[Path, str, PredictOptions, list[SceneJob]]:
    """Check the arguments before any cluster starts: options, model, output folder, scenes. Raises
    UrbanMTLError (exit status 2)."""
    options = options_from(args)
    validate_options(options)
    model_path = str(resolve_model_path(args.model).resolve())
    out_dir = Path(args.out_dir).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise BatchError(f"--out-dir '{out_dir}' is a file. Give a folder (it is created if needed).")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchError(f"The output folder '{out_dir}' cannot be created ({exc.strerror}).") from None
    if not os.access(out_dir, os.W_OK):
        raise BatchError(f"The output folder '{out_dir}' is not writable. Choose another --out-dir.")
    return out_dir, model_path, options, collect_scenes(args.inputs, out_dir)


def _dashboard_link(client) -> str:
    """The scheduler's dashboard address, or '' when it has none (the scheduler serves the address even without
    bokeh, but then shows only a page asking for it)."""
    try:
        has_bokeh = client.run_on_scheduler(lambda: __import__("importlib.util").util.find_spec("bokeh") is not None)
        return client.dashboard_link if has_bokeh else ""
    except Exception:
        return ""


def _local_cluster(args: argparse.Namespace, say: Callable[[str], None]):
    from distributed import LocalCluster

    cores = cpu_count()
    workers = args.workers or max(1, cores // 2)
    threads = args.threads_per_worker
    tf_threads = max(1, cores // (workers * threads))
    env = {"TF_NUM_INTRAOP_THREADS": str(tf_threads), "OMP_NUM_THREADS": str(tf_threads),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1")}
    # Without bokeh there is no dashboard to show: then any free port will do for the scheduler's HTTP server.
    dashboard = ":8787" if importlib.util.find_spec("bokeh") else ":0"
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, env=env,
                           dashboard_address=dashboard)
    say(f"Local Dask cluster: {workers} worker process(es) x {threads} thread(s), TensorFlow {tf_threads} "
        f"thread(s) each, on {cores} CPU cores.")
    return cluster


@contextmanager
def dask_client(args: argparse.Namespace, say: Callable[[str], None]) -> Iterator:
    """A distributed.Client: on --scheduler, or on a LocalCluster started here (closed on exit)."""
    from distributed import Client

    cluster = None
    if args.scheduler:
        if args.workers or args.threads_per_worker != 1:
            say("Note: --workers and --threads-per-worker are for a local cluster; ignored with --scheduler.")
        try:
            client = Client(args.scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except Exception as exc:      # OSError, TimeoutError; ValueError/TypeError for a malformed address
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BatchError(
                f"Cannot reach the Dask scheduler at '{args.scheduler}' ({reason}). Check the address (e.g. "
                f"tcp://host:8786) and that `dask scheduler` runs there, or leave out --scheduler to start a "
                f"local cluster.") from None
        count = len(client.nthreads())
        say(f"Dask scheduler {args.scheduler}: {count} worker(s)" + ("; waiting for workers to join." if not count
                                                                     else "."))
    else:
        cluster = _local_cluster(args, say)
        client = Client(cluster)
    link = _dashboard_link(client)
    say(f"Dask dashboard: {link}" if link else "No Dask dashboard (bokeh>=3.1 is not installed).")
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            # Worker processes that take more than a few seconds to exit (TensorFlow's clean-up on a busy
            # machine) are killed by their nanny, which says so in a warning: expected here, so not shown.
            logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
            cluster.close()


def check_workers(client) -> None:
    """Raise BatchError when a connected worker cannot import the project (workers that join later are not
    checked; a worker that does not answer in PROBE_TIMEOUT_S is left alone)."""
    from distributed import wait

    probe_id = uuid.uuid4().hex[:8]
    futures = {client.submit(_PROBE, key=f"urbanmtl-probe-{probe_id}-{i}", workers=[address], pure=False,
                             allow_other_workers=False): address for i, address in enumerate(client.nthreads())}
    try:
        wait(list(futures), timeout=PROBE_TIMEOUT_S)
    except TimeoutError:
        pass
    failed = [(address, f.exception()) for f, address in futures.items() if f.status == "error"]
    client.cancel(list(futures))
    if failed:
        address, exc = failed[0]
        raise BatchError(
            f"{len(failed)} of {len(futures)} Dask worker(s) cannot import the project (e.g. {address}: "
            f"{type(exc).__name__}: {exc}). Start the workers with the project's Python environment and "
            f"PYTHONPATH set to the project folder ({Path(__file__).resolve().parents[1]}).")


def run_batch(client, todo: Sequence[tuple], rows: list[Row], summary: Path, model_path: str, out_dir: Path,
              finished: int = 0) -> None:
    """Submit one task per scene and collect them as they finish, rewriting the summary after each."""
    from distributed import as_completed
    from tqdm import tqdm

    batch_id = uuid.uuid4().hex[:12]
    futures = {}
    for index, job, options, note in todo:
        future = client.submit(_TASK, asdict(job), model_path, asdict(options), batch_id, str(out_dir),
                               pure=False, retries=RETRIES, key=f"urbanmtl-{job.stem}-{batch_id}")
        futures[future] = (index, note)
    bar = tqdm(total=len(futures), unit="scene", desc="batch", file=sys.stderr, dynamic_ncols=True)
    try:
        for future in as_completed(futures):
            index, note = futures.pop(future)
            result = task_outcome(future)
            message = result.get("message", "")
            if result["status"] == "done" and note:
                message = f"{note} {message}".strip()
            rows[index] = Row(rows[index].scene, result["status"], result.get("worker", ""),
                              result.get("seconds"), result.get("km2"), message)
            finished += 1
            write_summary(summary, rows)
            bar.write(progress_line(finished, len(rows), rows[index]), file=sys.stdout)
            sys.stdout.flush()                       # a line per scene in logs too (stdout to a file or a pipe)
            bar.update()
    except BaseException:
        try:
            client.cancel(list(futures))
        except Exception:
            pass                                     # the client is closed next anyway
        raise
    finally:
        bar.close()


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The CLI (see the module docstring for the exit status)."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        out_dir, model_path, options, jobs = prepare(args)
    except UrbanMTLError as exc:
        say(f"error: {exc}")
        return 2
    summary = out_dir / SUMMARY_NAME
    rows, todo = plan_rows(jobs, options)
    finished = 0
    for row in rows:
        if row.status == "skipped":
            finished += 1
            print(progress_line(finished, len(rows), row), flush=True)
    write_summary(summary, rows)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        if todo:
            with dask_client(args, say) as client:
                check_workers(client)
                run_batch(client, todo, rows, summary, model_path, out_dir, finished)
    except BatchError as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt as exc:
        write_summary(summary, rows)
        name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
        say(f"error: interrupted ({name}); the scenes not finished are 'pending' in {summary}. Run the same "
            f"command again to go on.")
        return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    remove_marker_folder(out_dir)
    counts = {status: sum(r.status == status for r in rows) for status in ("done", "skipped", "failed")}
    print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed in "
          f"{time.perf_counter() - start:.1f} s; summary: {summary}", flush=True)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    # Run through the module core.batch, not this __main__ copy: workers import core.batch (see _TASK) and keep
    # its model cache; the copy run as __main__ must not be the one whose functions and globals they use.
    from core.batch import main as _main

    sys.exit(_main())
