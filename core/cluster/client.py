"""The client's side of a batch: a Dask client (on a scheduler, or on a LocalCluster started here), the workers
checked, one task per scene submitted (core.cluster.tasks) and the summary rewritten as each one finishes."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import uuid
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .scenes import BatchError, Row, cpu_count, progress_line, task_outcome, write_summary

#: A task that raises is run once more; a task whose worker dies is given to another worker by the scheduler
#: (up to its distributed.scheduler.allowed-failures, default 3) and reported as retried.
RETRIES = 1
#: Seconds to wait for --scheduler to answer, and for every worker to import the project.
CONNECT_TIMEOUT_S = 15
PROBE_TIMEOUT_S = 300
#: What the scheduler sees of a task: functions pickled by value (lambdas) and plain values. The scheduler
#: unpickles task graphs, so it never has to import the project (nor TensorFlow); the worker imports core.cluster.tasks.
PROBE = lambda: __import__("importlib").import_module("core.cluster.tasks").__name__  # noqa: E731
TASK = lambda *args: __import__("importlib").import_module("core.cluster.tasks").run_task(*args)  # noqa: E731


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
           "URBANMTL_THREADS": str(tf_threads),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1")}
    # Without bokeh there is no dashboard to show: then any free port will do for the scheduler's HTTP server.
    dashboard = ":8787" if importlib.util.find_spec("bokeh") else ":0"
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, env=env,
                           dashboard_address=dashboard)
    say(f"Local Dask cluster: {workers} worker process(es) x {threads} thread(s), the network on {tf_threads} "
        f"thread(s) each (LiteRT or TensorFlow), on {cores} CPU cores.")
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
    futures = {client.submit(PROBE, key=f"urbanmtl-probe-{probe_id}-{i}", workers=[address], pure=False,
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
            f"PYTHONPATH set to the project folder ({Path(__file__).resolve().parents[2]}).")


def run_batch(client, todo: Sequence[tuple], rows: list[Row], summary: Path, model_path: str, out_dir: Path,
              finished: int = 0) -> None:
    """Submit one task per scene and collect them as they finish, rewriting the summary after each."""
    from distributed import as_completed
    from tqdm import tqdm

    batch_id = uuid.uuid4().hex[:12]
    futures = {}
    for index, job, options, note in todo:
        future = client.submit(TASK, asdict(job), model_path, asdict(options), batch_id, str(out_dir),
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
