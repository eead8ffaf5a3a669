"""The mapping engine as a child process: runs core.mapping.predict.predict_scene and reports in JSON lines on stdout.

The QGIS plugin never runs the network in the QGIS process (TensorFlow there clashes with the OpenGL driver's LLVM,
docs/tests.md); it starts this module with QGIS's own Python and the engine folder of urbanmtl:install_engine, or a
configured Python (ui.interpreter), which maps on LiteRT or TensorFlow (core.network.runtime):

    python -m core.worker PARAMS.json [--watch-stdin]

PARAMS.json holds {"input": path or [paths], "hse": path, "lcz": path, "confidence": path or null,
"stats": path or null, "model": path or null, "umep": path or null, "w2w": path or null, "majority": 0, 3 or 5,
"options": {PredictOptions fields}}; the same parameters can be given as flags instead (`python -m core.worker
--help`). umep, w2w and majority are the LCZ exports of core.outputs.export (see core.predict --umep). Every line
written to stdout is one JSON object with an "event":

- {"event": "ready", "python": ..., "runtime": "litert" | "tensorflow", "version": "2.3.0", "device": "CPU",
  "threads": 2, "description": "LiteRT 2.3.0 (XNNPACK) on CPU, 2 threads", "reason": why this runtime}: the
  runtime is chosen and imported (TensorFlow only when it is the runtime);
- {"event": "progress", "percent": 12.5};
- {"event": "log", "message": "..."}: one engine message, for the user;
- {"event": "result", "hse": ..., "lcz": ..., "confidence": ..., "stats_path": ..., "stats": [rows],
  "tiles": 9, "seconds": 4.2, "area_km2": 6.55, "device": "CPU", "runtime": description, "warped": false, "umep": path or null,
  "w2w": path or null, "majority": 0, "majority_changed": cells}: the last line of a run;
- {"event": "error", "kind": "user" | "missing" | "cancelled" | "internal", "message": "...",
  "module": name (kind "missing" only), "detail": traceback (kind "internal" only)}.

Expected errors (core.common.errors.UrbanMTLError) are reported by their message alone, never a traceback. Anything
else the engine or a library prints (TensorFlow's C++ log, Python warnings) goes to stderr, never stdout.
SIGTERM (the plugin's Cancel) or, with --watch-stdin, the end of stdin (the parent closed it or died) stop
the run as soon as Python regains control: a network call in progress finishes first, and renaming the
outputs into place is not interrupted half-way where core.outputs has defer_signal. The engine removes its
temporary files on the way out, and the process ends without the interpreter's slow TensorFlow teardown.
Exit status (core.common.events): 0 done, 1 internal error, 2 user error, 3 a package is missing, 130 cancelled.
This module never imports qgis.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from typing import IO, Any, Callable, Optional, Sequence

from .common.errors import Cancelled, MissingPackage, UrbanMTLError
from .common.events import (
    CANCELLED, ERROR, EXIT_CANCELLED, EXIT_INTERNAL, EXIT_MISSING, EXIT_OK, EXIT_USER, INTERNAL, LOG, MISSING,
    PROGRESS, READY, RESULT, USER,
)
from .common.signals import defer_signal
from .common.options import OPTION_FIELDS, PredictOptions
from .common.spec import DEVICES, RUNTIMES



class Stopped(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM (or the end of stdin) to unwind the run; the engine removes its
    temporary files on the way out. A KeyboardInterrupt, so no `except Exception` in a library swallows it."""


#: core.outputs.defer_signal where the engine has it: True while outputs are being renamed into place, when
#: a stop must wait until the rename is done (set once core.predict is imported).
class Channel:
    """The JSON-lines channel to the parent, on a private copy of stdout.

    File descriptor 1 itself is pointed at stderr, so that whatever else prints (Python's print, TensorFlow's
    C++ logging, a library's banner) cannot corrupt the protocol.
    """

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        if stream is None:
            sys.stdout.flush()
            stream = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
            os.dup2(2, 1)
            sys.stdout = sys.stderr
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, default=_json_default, allow_nan=False)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def _json_default(value: Any) -> Any:
    """numpy scalars and paths in engine results, as plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "__fspath__"):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """JSON has no NaN: None instead."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_params(args: argparse.Namespace) -> dict[str, Any]:
    """The run's parameters from the JSON file, with any flags given on the command line on top."""
    params: dict[str, Any] = {"options": {}}
    if args.params:
        try:
            with open(args.params, encoding="utf-8") as handle:
                params.update(json.load(handle))
        except (OSError, json.JSONDecodeError) as exc:
            raise UrbanMTLError(f"Cannot read the parameter file '{args.params}': {exc}.") from None
    for key in ("input", "hse", "lcz", "confidence", "stats", "model", "umep", "w2w", "majority"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value[0] if key == "input" and len(value) == 1 else value
    options = dict(params.get("options") or {})
    for key in OPTION_FIELDS:
        value = getattr(args, key, None)
        if value not in (None, False):
            options[key] = value
    unknown = sorted(set(options) - set(OPTION_FIELDS))
    if unknown:
        raise UrbanMTLError(f"Unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_FIELDS)}.")
    if options.get("extent") is not None:
        options["extent"] = tuple(float(v) for v in options["extent"])
    params["options"] = options
    missing = [key for key in ("input", "hse", "lcz") if not params.get(key)]
    if missing:
        raise UrbanMTLError(f"No {', '.join(missing)} given: pass a PARAMS.json file or --input/--hse/--lcz.")
    return params


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.worker",
        description="Run one urbanmtl mapping (core.mapping.predict.predict_scene) and report progress, messages and the "
                    "result as JSON lines on stdout (the QGIS plugin's engine process).",
    )
    p.add_argument("params", nargs="?", help="JSON file with input, hse, lcz, confidence, stats, model, options")
    p.add_argument("--input", nargs="+", help="input raster, SAFE folder or band files")
    p.add_argument("--hse", help="output HSE GeoTIFF")
    p.add_argument("--lcz", help="output LCZ GeoTIFF")
    p.add_argument("--confidence", help="output LCZ confidence GeoTIFF")
    p.add_argument("--stats", help="output CSV of area per LCZ class")
    p.add_argument("--model", help="model.keras (default: the bundled model)")
    p.add_argument("--umep", help="output GeoTIFF: the LCZ map in UMEP codes (1-10, 101-107)")
    p.add_argument("--w2w", help="output GeoTIFF: the LCZ map for WRF's w2w (EPSG:4326)")
    p.add_argument("--majority", type=int, choices=(0, 3, 5), help="majority filter of the LCZ map (0 = off)")
    p.add_argument("--tile-size", type=int, dest="tile_size")
    p.add_argument("--overlap", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--device", choices=DEVICES)
    p.add_argument("--runtime", choices=RUNTIMES)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--watch-stdin", action="store_true",
                   help="stop when stdin reaches its end (the parent process closed it or died)")
    return p


def _install_stop_handlers(watch_stdin: bool) -> threading.Event:
    """SIGTERM (and, with watch_stdin, the end of stdin) raise Stopped in the main thread, once."""
    stopped = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001 (signal handler signature)
        if stopped.is_set():
            return
        stopped.set()
        if defer_signal(signum):
            return          # the engine stops itself right after the rename
        raise Stopped()

    signal.signal(signal.SIGTERM, on_signal)
    if watch_stdin:
        def watch() -> None:
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            signal.raise_signal(signal.SIGTERM)      # to this process, on Windows too (os.kill would end it)

        threading.Thread(target=watch, name="urbanmtl-stdin-watch", daemon=True).start()
    return stopped


def missing_package(channel: Channel, exc: ImportError) -> int:
    """Report a package the engine cannot import (an "error" event of kind "missing"); returns EXIT_MISSING."""
    module = (exc.name or "").split(".")[0] or None
    channel.send(ERROR, kind=MISSING, module=module,
                 message=f"The Python package '{module or exc}' cannot be imported ({exc}).")
    return EXIT_MISSING


def import_engine(channel: Channel, *modules: str) -> Optional[list[Any]]:
    """Import TensorFlow, the network's layers and `modules` (".finetuning.run": a module of core; else a package,
    e.g. "sklearn.ensemble"): [tensorflow, module, ...], or None after reporting the package that is missing (an
    "error" event of kind "missing"). For the engine processes that train (core.finetune_worker)."""
    import importlib

    try:
        import tensorflow

        # Keras and the network's layers: the engine loads them only with a model; a missing Keras is said here.
        importlib.import_module(".network.model", __package__)
        loaded = [tensorflow] + [importlib.import_module(m, __package__ if m.startswith(".") else None)
                                 for m in modules]
    except ImportError as exc:
        missing_package(channel, exc)
        return None
    return loaded


def run(params: dict[str, Any], channel: Channel, stopped: Optional[threading.Event] = None) -> int:
    """Choose the runtime (LiteRT or TensorFlow, core.network.runtime) and import it, map the scene, report; returns
    the exit status. On LiteRT, TensorFlow is never imported."""
    try:
        from .mapping import networks, predict

        options = PredictOptions(**params["options"])
        predict.validate_options(options)
        model_file, card = networks.read_model(params.get("model"))
        runtime = networks.run_runtime(options.runtime, options.device, model_file, card,
                                       predict.window_of(options, card))
    except ImportError as exc:
        return missing_package(channel, exc)
    except MissingPackage as exc:
        channel.send(ERROR, kind=MISSING, module=exc.module, message=str(exc))
        return EXIT_MISSING
    device = runtime.device.strip("/").split(":")[0]
    channel.send(READY, python=sys.executable, runtime=runtime.choice.name, version=runtime.version,
                 device=device, threads=runtime.threads, description=runtime.describe(),
                 reason=runtime.choice.reason)
    result = predict.predict_scene(
        params["input"], params["hse"], params["lcz"], confidence_path=params.get("confidence"),
        stats_path=params.get("stats"), model_path=params.get("model"), options=options,
        umep_path=params.get("umep"), w2w_path=params.get("w2w"), majority=int(params.get("majority") or 0),
        progress=lambda percent: channel.send(PROGRESS, percent=round(float(percent), 2)),
        is_cancelled=(stopped.is_set if stopped is not None else None),
        log=lambda text: channel.send(LOG, message=str(text)),
    )
    stats = [{k: _finite(v) for k, v in row.items()} for row in result.stats]
    channel.send(
        RESULT, hse=result.hse_path, lcz=result.lcz_path, confidence=result.confidence_path,
        stats_path=result.stats_path, stats=stats, tiles=result.tiles,
        seconds=round(result.seconds, 3), area_km2=sum(float(r.get("area_km2") or 0.0) for r in stats),
        device=device, runtime=result.runtime, warped=bool(result.warped), umep=result.exports.get("umep"),
        w2w=result.exports.get("w2w"), majority=result.exports.get("majority", 0),
        majority_changed=result.exports.get("changed_cells", 0),
    )
    return EXIT_OK


def serve(job: Callable[[threading.Event], int], channel: Channel, watch_stdin: bool = False) -> int:
    """Run `job(stopped)` with the stop handlers installed and report how it ended on `channel`; returns the exit
    status (the job's own, or EXIT_CANCELLED / EXIT_USER / EXIT_INTERNAL)."""
    stopped = _install_stop_handlers(watch_stdin)
    start = time.perf_counter()
    try:
        return job(stopped)
    except KeyboardInterrupt as exc:       # Stopped, Ctrl-C, or the engine's own Interrupted
        message = str(exc) if type(exc) is not Stopped and str(exc) else "Cancelled; no output was written."
        channel.send(ERROR, kind=CANCELLED, message=message)
        return EXIT_CANCELLED
    except UrbanMTLError as exc:
        # core.common.errors.Cancelled is an UrbanMTLError too: the run stopped between two batches.
        kind = CANCELLED if isinstance(exc, Cancelled) else USER
        channel.send(ERROR, kind=kind, message=str(exc))
        return EXIT_CANCELLED if kind == CANCELLED else EXIT_USER
    except Exception as exc:
        if stopped.is_set():   # the stop surfaced from library code in another guise (TensorFlow re-raises)
            channel.send(ERROR, kind=CANCELLED, message="Cancelled; no output was written.")
            return EXIT_CANCELLED
        # A bug: the parent shows the message and keeps the traceback for the log.
        channel.send(ERROR, kind=INTERNAL, message=f"{type(exc).__name__}: {exc}",
                     detail=traceback.format_exc(), seconds=round(time.perf_counter() - start, 3))
        return EXIT_INTERNAL


def exit_now(status: int) -> None:
    """Leave the process with `status`, skipping the interpreter's teardown: with TensorFlow loaded it takes
    seconds, which a cancelled run in QGIS would wait for. Everything the run wrote is closed and renamed (or
    removed) by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: Optional[Sequence[str]] = None, channel: Optional[Channel] = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    channel = channel or Channel()
    args = build_parser().parse_args(argv)
    return serve(lambda stopped: run(read_params(args), channel, stopped), channel, args.watch_stdin)


if __name__ == "__main__":
    exit_now(main())
