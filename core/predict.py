"""The command line of a mapping run: python -m core.predict scene.tif --hse hse.tif --lcz lcz.tif [...].

Parses the arguments into core.mapping.predict.PredictOptions, runs core.mapping.predict.predict_scene with a
progress bar on stderr, turns every failure into one "error: ..." line and an exit status, and makes stop signals
(SIGINT, SIGTERM, SIGHUP) end the run cleanly: temporaries removed, exit status 128 + signal number.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Before TensorFlow loads (on the TensorFlow runtime, core.mapping.networks): silence its start-up INFO lines
    # (CPU features, oneDNN) and keep its warnings and errors (TF_ENABLE_ONEDNN_OPTS is left alone: it changes
    # numerics), and let a stop signal while they load end the process with one line instead of an import
    # traceback. main() installs the handlers of the run itself.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import signal as _signal

    def _stopped_while_starting(signum, frame):  # pragma: no cover - exercised through a subprocess
        sys.stderr.write(f"error: interrupted ({_signal.Signals(signum).name}) while starting; no output was "
                         f"written.\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    for _name in ("SIGINT", "SIGTERM", "SIGHUP"):      # Windows has no SIGHUP
        if hasattr(_signal, _name):
            _signal.signal(getattr(_signal, _name), _stopped_while_starting)

import argparse
import signal
import threading
from typing import Any, Optional, Sequence

from .common.cli import STOP_SIGNALS, ignore_stops
from .common.errors import Interrupted, UrbanMTLError
from .common.signals import defer_signal
from .common.options import PredictOptions
from .common.spec import ATTENTIONS, BATCH_PIXELS, DEVICES, MAJORITY_SIZES, RUNTIMES, SCHEMES, SIZE_MULTIPLE
from .inputs.scene import InputSpec
from .outputs import remove_temporaries
from .tiling.layout import WINDOWED_OVERLAP, WINDOWED_TILE_SIZE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.predict",
        description="Map human settlement extent (HSE density, 20 m) and Local Climate Zones (LCZ, 100 m) from "
                    "a Sentinel-2 scene with the urbanmtl multitask network.",
    )
    p.add_argument("input", nargs="+", help="Sentinel-2 raster (GeoTIFF, VRT, ...), SAFE folder or .zip, a folder "
                                            "of band files, or several band files")
    p.add_argument("--hse", required=True, help="output GeoTIFF: HSE density 0..1 at 20 m (nodata -1)")
    p.add_argument("--lcz", required=True, help="output GeoTIFF: LCZ codes 1..17 at 100 m (0 = nodata)")
    p.add_argument("--confidence", help="output GeoTIFF: probability of the winning LCZ class at 100 m")
    p.add_argument("--stats", help="output CSV: per LCZ class cells, area_km2 and mean HSE")
    p.add_argument("--model", help="model.keras or training run folder (default: the bundled model)")
    p.add_argument("--bands", nargs="+", metavar="NAME", help="Sentinel-2 name of every input band, file order")
    p.add_argument("--extent", nargs=4, type=float, metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
                   help="map only this rectangle (in the input's CRS unless --extent-crs)")
    p.add_argument("--extent-crs", help="CRS of --extent, e.g. EPSG:4326")
    p.add_argument("--tile-size", type=int,
                   help=f"tile edge in 10 m pixels, multiple of {SIZE_MULTIPLE} (default: the engine's for the model, "
                        f"core.tiling.model_tiling: {WINDOWED_TILE_SIZE} with windowed attention; with --attention "
                        f"tile, the size of the model's training windows, 64 for the bundled model)")
    p.add_argument("--overlap", type=int,
                   help=f"pixels each tile shares with each neighbour (default: {WINDOWED_OVERLAP} "
                   "with windowed attention, at least the model's label margin; with --attention tile a quarter of the "
                   "tile size, 16 for the bundled model)")
    p.add_argument("--batch-size", type=int,
                   help=f"tiles per network call (default: as many as make {BATCH_PIXELS} pixels, at least 1)")
    p.add_argument("--device", choices=DEVICES, default=DEVICES[0], help="where the network runs (auto)")
    p.add_argument("--runtime", choices=RUNTIMES, default=RUNTIMES[0],
                   help="what runs the network: auto (default) takes LiteRT on the CPU where the model has a LiteRT "
                        "export (model.tflite) and ai-edge-litert is installed, TensorFlow for a GPU or a model with "
                        "only its .keras file; litert or tensorflow insist")
    p.add_argument("--offset", type=float, help="DN offset to apply instead of the metadata's (e.g. -1000)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--cog", action="store_true", help="write Cloud-Optimized GeoTIFFs")
    p.add_argument("--scheme", choices=SCHEMES, default=SCHEMES[0],
                   help="blend: overlapping tiles, smooth weights; authors: four diagonal offsets, averaged")
    p.add_argument("--attention", choices=ATTENTIONS, default=ATTENTIONS[0],
                   help="window (default): the attention pools over the model's training window around each pixel, "
                        "the same map whatever the tile size; tile: over each tile (tiles of the training size)")
    p.add_argument("--umep", metavar="PATH",
                   help="also write the LCZ map in UMEP codes (1-10, 101-107) as this GeoTIFF")
    p.add_argument("--w2w", metavar="PATH", help="also write a copy of the LCZ map for WRF's w2w (EPSG:4326, codes "
                                                 "1-17) as this GeoTIFF")
    p.add_argument("--majority", type=int, choices=MAJORITY_SIZES, default=0,
                   help="majority-filter the LCZ map over 3x3 or 5x5 cells before the exports (0 = off, the default)")
    return p




def quiet_tensorflow_logs() -> None:
    """Hide TensorFlow's C++ INFO lines (CPU features, oneDNN notices), keep its warnings and errors. Only
    effective before TensorFlow is imported; an explicit TF_CPP_MIN_LOG_LEVEL is left as it is. Numerics are
    not touched (TF_ENABLE_ONEDNN_OPTS stays as the user set it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


#: The last stop signal the CLI's handler received (None: none). An exception that a stop signal set off
#: inside library code may reach main() in another guise; main() then still reports the stop.
_stop_received: Optional[int] = None


def _stop(signum, frame) -> None:
    """Raise Interrupted where that unwinds cleanly: in urbanmtl's own Python code. Interrupted inside a library
    (TensorFlow's C++ calling back into Python, rasterio's Cython checking a dtype), the exception comes out as
    another error or as an 'Exception ignored' traceback; there the stop is only recorded, and the next batch
    (_raise_if_stopped, between batches) or the end of a deferring section (core.common.signals) raises it."""
    global _stop_received
    _stop_received = signum
    if defer_signal(signum):      # outputs are being renamed, or a batch is in TensorFlow: stop right after
        return
    module = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
    if frame is not None and not (module.startswith("core.") or module == "__main__"):
        return
    raise Interrupted(signum)


def _raise_if_stopped() -> bool:
    """The run's is_cancelled check, between batches: a recorded stop signal is raised here."""
    if _stop_received is not None:
        raise Interrupted(_stop_received)
    return False


def _install_stop_handlers() -> dict:
    """Make SIGINT, SIGTERM and SIGHUP raise Interrupted (main thread only); returns the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for signum in STOP_SIGNALS:
        try:
            previous[signum] = signal.signal(signum, _stop)
        except (ValueError, OSError):  # pragma: no cover
            pass
    return previous


def _restore_handlers(previous: dict) -> None:
    """Put back the handlers main() replaced; the CLI's start-up handler becomes the default action (the run is
    over: a signal now simply ends the process, silently)."""
    for signum, handler in previous.items():
        if handler is None or getattr(handler, "__name__", "") == "_stopped_while_starting":
            handler = signal.SIG_DFL
        try:
            signal.signal(signum, handler)
        except (ValueError, OSError, TypeError):  # pragma: no cover
            pass


class _Console:
    """The CLI's stderr: a progress bar once progress is reported, messages above it, one "error: ..." line."""

    def __init__(self) -> None:
        self.bar: Any = None

    def progress(self, percent: float) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", desc="predict", file=sys.stderr,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
        self.bar.update(percent - self.bar.n)

    def log(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def fail(self, text: str, code: int) -> int:
        self.close()
        print(f"error: {text}", file=sys.stderr, flush=True)
        return code


def _run(args: argparse.Namespace, console: _Console) -> Any:
    """predict_scene with the parsed arguments."""
    from .mapping.predict import predict_scene

    options = PredictOptions(
        bands=args.bands, extent=tuple(args.extent) if args.extent else None, extent_crs=args.extent_crs,
        tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size, device=args.device,
        overwrite=args.overwrite, cog=args.cog, scheme=args.scheme, offset=args.offset, attention=args.attention,
        runtime=args.runtime,
    )
    source: InputSpec = args.input[0] if len(args.input) == 1 else args.input
    import rasterio

    # Inside a rasterio environment GDAL's own messages go to Python logging instead of raw "ERROR 1: ..."
    # lines on stderr; every failure that matters comes back as one error line that quotes GDAL's reason.
    with rasterio.Env():
        return predict_scene(
            source, args.hse, args.lcz, confidence_path=args.confidence, stats_path=args.stats,
            model_path=args.model, options=options, progress=console.progress, log=console.log,
            is_cancelled=_raise_if_stopped, umep_path=args.umep, w2w_path=args.w2w, majority=args.majority,
        )


def _failure(exc: BaseException, console: _Console) -> int:
    """The exit status of a run that raised `exc`, after its one error line (re-raises with URBANMTL_DEBUG=1
    what is a bug)."""
    if isinstance(exc, UrbanMTLError):
        return console.fail(str(exc), 2)
    if isinstance(exc, KeyboardInterrupt):
        if isinstance(exc, Interrupted):
            return console.fail(str(exc), exc.exit_code)
        return console.fail("interrupted (SIGINT); no output was written.", 128 + signal.SIGINT)
    if isinstance(exc, MemoryError):
        return console.fail("out of memory; no output was written. Use a smaller --tile-size or --batch-size, or "
                            "close other programs.", 2)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return console.fail(f"{exc.strerror or exc}{where}; no output was written. Check the disk space and the "
                            f"permissions of the input and output folders.", 2)
    if _stop_received is not None and not os.environ.get("URBANMTL_DEBUG"):
        return console.fail(str(Interrupted(_stop_received)), 128 + _stop_received)
    if os.environ.get("URBANMTL_DEBUG"):
        raise exc
    text = str(exc).strip()
    return console.fail(f"unexpected {type(exc).__name__}: {text.splitlines()[0] if text else ''}; no output was "
                        f"written. This is a bug: run again with URBANMTL_DEBUG=1 to see where it happened, and "
                        f"report it.", 1)


def _print_stats(rows: list[dict]) -> None:
    for row in rows:
        if row["cells"]:
            mean = "" if row["mean_hse"] is None else f"{row['mean_hse']:.3f}"
            print(f"{row['letter']:>2} {row['name']:<22} {row['cells']:>8} cells {row['area_km2']:>10.2f} km2  "
                  f"mean HSE {mean}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The CLI. Exit status: 0 done; 2 a problem the message explains (nothing was written); 1 an unexpected
    failure (a bug: URBANMTL_DEBUG=1 shows the traceback); 128 + signal number when stopped (130 for Ctrl-C),
    every temporary file removed."""
    quiet_tensorflow_logs()
    args = build_parser().parse_args(argv)
    global _stop_received
    _stop_received = None
    previous = _install_stop_handlers()
    console = _Console()
    try:
        result = _run(args, console)
    except Exception as exc:
        return _failure(exc, console)
    except KeyboardInterrupt as exc:
        return _failure(exc, console)
    finally:
        ignore_stops()
        remove_temporaries()
        _restore_handlers(previous)
    if _stop_received is not None:    # recorded inside a library after the last batch: the outputs are complete
        return console.fail(str(Interrupted(_stop_received, f"interrupted after the outputs were complete: "
                                                          f"{result.hse_path} and {result.lcz_path} were written.")),
                            128 + _stop_received)
    console.close()
    _print_stats(result.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
