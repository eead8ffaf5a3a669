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

The output folder is claimed by core.common.run_folder.RunFolder (new or empty, a locked marker, everything the run
wrote removed when it fails or is cancelled; the headless core.finetune claims it the same way). This module never
imports qgis.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from .common.errors import UrbanMTLError
from .common.run_folder import RunFolder
from .common.events import EXIT_MISSING, EXIT_OK, LOG, PROGRESS, READY, RESULT
from .worker import Channel, exit_now, import_engine, serve

PARAM_KEYS = ("image", "polygons", "field", "out", "model", "epochs", "layer", "bands", "offset", "seed",
              "test_share", "refit", "distill")
REQUIRED = ("image", "polygons", "out")
SCORES = ("oa", "oa_u", "oa_bu", "oa_w", "kappa")


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
        raise UrbanMTLError(f"No {', '.join(missing)} given: pass a PARAMS.json file or --image/--polygons/"
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
    opts = setup.FinetuneOptions(**{"field": None, **{k: v for k, v in params.items() if v is not None}})
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
