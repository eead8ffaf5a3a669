"""Fine-tuning as a child process: runs core.finetuning.run.finetune and reports in JSON lines on stdout, with the
protocol, stop handling and exit codes of core.worker (the QGIS algorithm urbanmtl:train_from_polygons starts it):

    python -m core.finetune_worker PARAMS.json [--watch-stdin]

PARAMS.json holds {"image": path, "polygons": path, "field": name, "out": run folder, "model": path or null,
"epochs": n or null (automatic), "layer": name or null, "bands": [names] or null, "offset": number or null,
"seed": 0, "test_share": 0.3, "refit": true, "distill": weight or null (the default)}. Events: "ready", "progress" (0..100 over the whole run, core.finetune.
PROGRESS_STEPS), "log", "error" as in core.worker, and last

    {"event": "result", "out": RUN, "model": RUN/model.keras, "report": RUN/accuracy.html,
     "accuracy": RUN/accuracy.json, "n_train": 4, "n_test": 2, "epochs": 5, "seconds": 61.2, "test_cells": 18,
     "before": {"oa", "oa_u", "oa_bu", "oa_w", "kappa"}, "after": {...}, "forest": {...} (the random forest on
     the same polygons), "oa_gain_95": [low, high] or null, "refit": {"polygons", "epochs", "windows_per_epoch"}
     or null (the final model trained on all polygons), "warnings": [sentences] (classes the final map still
     calls something else on most of their training polygons)}.

The output folder. It must be new or empty: a run never writes among other files, so nothing the user had is
replaced. While the run writes, the folder holds a marker file, .urbanmtl-run, locked (core.common.locks) by the running
process. A run that fails or is cancelled removes everything it wrote, the folder included when the run created
it. A run killed before it could do so (SIGKILL, a crash, a power cut) leaves its files and the unlocked marker:
the parent calls remove_stopped_run() after killing it, and the next run into the same folder does the same
first and says so in its log, so the folder never blocks the next run. This module never imports qgis.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from .common.errors import UrbanMTLError
from .common.locks import try_lock
from .common.events import EXIT_MISSING, EXIT_OK, LOG, PROGRESS, READY, RESULT
from .worker import Channel, exit_now, import_engine, serve

#: The marker of a run in progress (or killed) in its output folder.
MARKER = ".urbanmtl-run"
PARAM_KEYS = ("image", "polygons", "field", "out", "model", "epochs", "layer", "bands", "offset", "seed",
              "test_share", "refit", "distill")
REQUIRED = ("image", "polygons", "field", "out")
SCORES = ("oa", "oa_u", "oa_bu", "oa_w", "kappa")


def _lock(fd: int) -> bool:
    """Try to take the exclusive lock of `fd` (core.common.locks); False when another live process holds it."""
    try:
        return try_lock(fd)
    except OSError:           # a filesystem without locks: the marker alone says a run is there
        return True


def _clear(out: Path, created: bool) -> list[str]:
    """Remove everything in `out` (the run claimed it empty), and `out` itself when the run created it."""
    removed = []
    for entry in sorted(out.iterdir()) if out.is_dir() else ():
        if entry.name == MARKER:
            continue
        try:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry.name)
        except OSError:
            pass
    try:
        (out / MARKER).unlink()
    except OSError:
        pass
    if created:
        try:
            out.rmdir()
        except OSError:
            pass
    return removed


def remove_stopped_run(out: str | os.PathLike) -> Optional[list[str]]:
    """Remove what a stopped (killed) run left in `out`: None when there is no such run (no marker, or the run
    is alive and holds its lock), else the names removed."""
    out = Path(out)
    marker = out / MARKER
    try:
        fd = os.open(marker, os.O_RDWR)
    except OSError:
        return None
    try:
        if not _lock(fd):
            return None          # a live run: its files are not ours
        try:
            created = bool(json.loads(os.read(fd, 4096).decode("utf-8") or "{}").get("created"))
        except ValueError:
            created = False
        return _clear(out, created)
    finally:
        os.close(fd)


class RunFolder:
    """The output folder of one run (a context manager): claims it (new or empty, marker locked), and on the
    way out removes the marker, and with it everything the run wrote when the run failed or was cancelled."""

    def __init__(self, out: str | os.PathLike, log: Any) -> None:
        self.out = Path(out)
        self.log = log
        self.created = False
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunFolder":
        out = self.out
        stale = remove_stopped_run(out)
        if stale is not None:
            self.log(f"Removed what an earlier, stopped run left in {out}: {', '.join(stale) or 'nothing'}.")
        elif (out / MARKER).exists():
            raise UrbanMTLError(f"Another training run is writing to the folder '{out}'. Wait for it to finish or "
                                f"choose another output folder.")
        if out.exists() and not out.is_dir():
            raise UrbanMTLError(f"The output folder '{out}' is a file. Choose a new or empty folder.")
        if out.is_dir():
            entries = sorted(p.name for p in out.iterdir())
            if entries:
                runs = [name for name in ("model.keras", "accuracy.json", "state.json") if name in entries]
                what = (f"already holds a training run ({', '.join(runs)})" if runs
                        else f"is not empty ({', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''})")
                raise UrbanMTLError(f"The output folder '{out}' {what}. Choose a new or empty output folder: a "
                                    f"training run writes model.keras, accuracy.html, maps/ and more into it.")
        else:
            try:
                out.mkdir(parents=True)
            except OSError as exc:
                raise UrbanMTLError(f"Cannot create the output folder '{out}' ({exc.strerror or exc}). Choose a "
                                    f"writable folder.") from None
            self.created = True
        self._fd = os.open(out / MARKER, os.O_RDWR | os.O_CREAT, 0o644)
        _lock(self._fd)
        os.write(self._fd, json.dumps({"created": self.created, "pid": os.getpid()}).encode("utf-8"))
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            _clear(self.out, self.created)
        else:
            (self.out / MARKER).unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params:
        try:
            with open(args.params, encoding="utf-8") as handle:
                params.update(json.load(handle))
        except (OSError, json.JSONDecodeError) as exc:
            raise UrbanMTLError(f"Cannot read the parameter file '{args.params}': {exc}.") from None
    for key in PARAM_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            params[key] = value
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if unknown:
        raise UrbanMTLError(f"Unknown parameter(s) {', '.join(unknown)}; known: {', '.join(PARAM_KEYS)}.")
    missing = [key for key in REQUIRED if not params.get(key)]
    if missing:
        raise UrbanMTLError(f"No {', '.join(missing)} given: pass a PARAMS.json file or --image/--polygons/--field/"
                            f"--out.")
    if params.get("epochs") in (0, "0"):
        params["epochs"] = None          # 0 = automatic, as the QGIS parameter offers it
    return params


def run(params: dict[str, Any], channel: Channel, stopped: Optional[threading.Event] = None) -> int:
    """Import the engine, fine-tune, report; returns the exit status."""
    # scikit-learn: the random forest the report compares with (core.finetuning.forest), checked before any work.
    loaded = import_engine(channel, ".finetuning.run", ".finetuning.setup", ".network.inference", "sklearn.ensemble")
    if loaded is None:
        return EXIT_MISSING
    tf, finetune, setup, inference, _ = loaded
    opts = setup.FinetuneOptions(**{k: v for k, v in params.items() if v is not None})
    device = inference.select_device("auto").strip("/").split(":")[0]
    channel.send(READY, python=sys.executable, runtime="tensorflow", version=tf.__version__, device=device,
                 description=f"TensorFlow {tf.__version__} on {device}")

    def log(text: str) -> None:
        channel.send(LOG, message=str(text))

    started = time.perf_counter()
    with RunFolder(opts.out, log):
        result = finetune.finetune(opts, log=log,
                                   progress=lambda p: channel.send(PROGRESS, percent=round(float(p), 2)))
    out = Path(opts.out)
    ci = (result.get("bootstrap") or {}).get("oa_gain_95")
    channel.send(
        RESULT, out=str(out), model=str(out / "model.keras"), report=str(out / "accuracy.html"),
        accuracy=str(out / "accuracy.json"), n_train=result["split"]["n_train"], n_test=result["split"]["n_test"],
        epochs=result["settings"]["epochs"], test_cells=result["after"]["cells"],
        seconds=round(time.perf_counter() - started, 1), device=device,
        before={k: result["before"][k] for k in SCORES}, after={k: result["after"][k] for k in SCORES},
        forest={k: result["forest"][k] for k in SCORES}, oa_gain_95=list(ci) if ci else None,
        refit=result["settings"].get("refit"), warnings=result.get("warnings", []),
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.finetune_worker",
        description="Run one urbanmtl fine-tuning (core.finetune) and report progress, messages and the result "
                    "as JSON lines on stdout (the QGIS plugin's engine process for training).")
    p.add_argument("params", nargs="?", help="JSON file with image, polygons, field, out, model, epochs, ...")
    p.add_argument("--image", help="Sentinel-2 raster")
    p.add_argument("--polygons", help="training areas (any OGR format and CRS)")
    p.add_argument("--field", help="attribute holding the LCZ class")
    p.add_argument("--out", help="run folder to create (new or empty)")
    p.add_argument("--model", help="start model: model.keras or a run folder (default: the bundled model)")
    p.add_argument("--epochs", type=int, help="epochs (default or 0: automatic)")
    p.add_argument("--watch-stdin", action="store_true",
                   help="stop when stdin reaches its end (the parent process closed it or died)")
    return p


def main(argv: Optional[Sequence[str]] = None, channel: Optional[Channel] = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    channel = channel or Channel()
    args = build_parser().parse_args(argv)
    return serve(lambda stopped: run(read_params(args), channel, stopped), channel, args.watch_stdin)


if __name__ == "__main__":
    exit_now(main())
