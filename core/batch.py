"""Map many Sentinel-2 scenes on a Dask cluster: one task per scene, each running core.mapping.predict.predict_scene.

    python -m core.batch INPUT... --out-dir DIR [--scheduler tcp://host:8786] [--workers N]
        [--threads-per-worker N] [--model M] [--overwrite] [--device auto|cpu|gpu] [--tile-size ...] ...

For every scene (core.cluster.scenes says which inputs name which scenes) a worker writes DIR/<stem>_hse.tif and
DIR/<stem>_lcz.tif, exactly what `python -m core.predict SCENE --hse ... --lcz ...` writes with the same flags
(atomically: temporary names, then renames). DIR/summary.csv (scene,status,worker,seconds,km2,message) is
rewritten atomically after every scene. Scenes whose outputs are already complete are skipped (unless
--overwrite), so running the same command again resumes an interrupted batch. A failed scene never stops the
others. Without --scheduler a distributed.LocalCluster is started on this machine.

On a worker the model is loaded once per process, not once per scene (core.cluster.tasks), and never travels
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
import signal
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from .cluster.client import check_workers, dask_client, run_batch
from .cluster.scenes import (
    SUMMARY_NAME, BatchError, SceneJob, collect_scenes, plan_rows, progress_line, release_scene, remove_marker_folder,
    write_summary,
)
from .common.errors import Interrupted, UrbanMTLError
from .mapping.predict import PredictOptions, validate_options
from .network.files import resolve_model_path
from .outputs.temporaries import remove_abandoned
from .common.cli import STOP_SIGNALS
from .predict import build_parser as predict_parser

#: The flags of core.predict a batch passes on to every scene: parsed exactly as there (types, choices, defaults).
PREDICT_FLAGS = ("--model", "--bands", "--tile-size", "--overlap", "--batch-size", "--device", "--offset",
                 "--overwrite", "--cog", "--scheme", "--attention", "--runtime")

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
    flags = {option: action for action in predict_parser()._actions for option in action.option_strings}
    for flag in PREDICT_FLAGS:
        p._add_action(flags[flag])
    return p


def options_from(args: argparse.Namespace) -> PredictOptions:
    return PredictOptions(bands=args.bands, tile_size=args.tile_size, overlap=args.overlap,
                          batch_size=args.batch_size, device=args.device, overwrite=args.overwrite, cog=args.cog,
                          scheme=args.scheme, offset=args.offset, attention=args.attention,
                          runtime=args.runtime)


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
        # SIGINT too: a process started in the background by a shell inherits it ignored, and Python's own
        # KeyboardInterrupt would then never come.
        previous = {signum: signal.signal(signum, _raise_interrupted) for signum in STOP_SIGNALS}
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
        # The cluster is closed by now: what its workers were writing when they stopped goes (temporaries and
        # locks no live process holds); a local cluster's workers are gone, so their scene claims go too.
        for _, job, _, _ in todo:
            for final in (job.hse, job.lcz):
                remove_abandoned(Path(final))
            if not args.scheduler:
                release_scene(out_dir, job.stem)
        remove_marker_folder(out_dir)
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
    sys.exit(main())
