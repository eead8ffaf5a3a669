"""The command line of fine-tuning: python -m core.finetune --image S2.tif --polygons areas.gpkg --field lcz --out RUN
(see core.finetuning.run). Exit status 0 done, 2 a problem the message explains."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

from .common.cli import EXIT_HELP, run_command
from .common.errors import UrbanMTLError
from .common.run_folder import RunFolder
from .finetuning.run import finetune
from .common.spec import DEFAULT_DISTILL, MAX_EPOCHS, MIN_EPOCHS
from .finetuning.setup import FREEZE, LEARNING_RATE, TRAIN_WINDOWS, FinetuneOptions
from .training.transfer import FREEZES


def _summary(result: dict[str, Any]) -> str:
    b, a, f = result["before"], result["after"], result["forest"]
    text = (f"OA {b['oa']:.3f} -> {a['oa']:.3f} ({a['oa'] - b['oa']:+.3f}; random forest {f['oa']:.3f}) on "
            f"{a['cells']} test cells of {result['split']['n_test']} held-out polygons; OA_bu {b['oa_bu']:.3f} -> "
            f"{a['oa_bu']:.3f} (forest {f['oa_bu']:.3f}), OA_w {b['oa_w']:.3f} -> {a['oa_w']:.3f}")
    ci = result.get("bootstrap")
    if ci:
        text += f"; gain 95 % interval {ci['oa_gain_95'][0]:+.3f} to {ci['oa_gain_95'][1]:+.3f}"
    return text + "."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.finetune",
        description="Fine-tune the urbanmtl network on LCZ training areas (polygons) drawn over a Sentinel-2 image, "
                    "then score the start and the fine-tuned model on held-out polygons (accuracy.json/.html).",
        epilog=EXIT_HELP + " A failed or stopped run removes what it wrote into --out (which must be new or empty).")
    p.add_argument("--image", required=True, help="Sentinel-2 raster (anything core.predict reads)")
    p.add_argument("--polygons", required=True, help="training areas: GeoPackage, shapefile, GeoJSON, KML, ...")
    p.add_argument("--field", help="attribute holding the class: 1-17, 1-10/A-G or 101-107 (leave it out for a "
                                    "WUDAPT/LCZ Generator KML/KMZ with one folder per class, named e.g. '2', "
                                    "'LCZ 2 Compact midrise', 'A Dense trees')")
    p.add_argument("--out", required=True, help="run folder to create (model.keras, accuracy.json, ...)")
    p.add_argument("--model", help="start model: model.keras or a run folder (default: the bundled model)")
    p.add_argument("--epochs", type=int, help=f"epochs (default: about {TRAIN_WINDOWS} training windows as large as "
                   f"the start model's mapping tiles, {MIN_EPOCHS}-{MAX_EPOCHS} epochs)")
    p.add_argument("--distill", type=float, default=DEFAULT_DISTILL,
                   help=f"weight of keeping the start model's own map away from the polygons, where they do not "
                        f"contradict it (default {DEFAULT_DISTILL:g}; 0 = train on the polygons alone)")
    p.add_argument("--freeze", choices=FREEZES, default=FREEZE,
                   help=f"layers that keep the start model's weights (default {FREEZE}: all but the LCZ branch, "
                        f"so the HSE map does not change; none = train every layer)")
    p.add_argument("--no-refit", dest="refit", action="store_false",
                   help="keep the model trained on the train polygons as the run's model (default: once the test "
                        "polygons are scored, train the run's model again on all polygons)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the training (default 0)")
    p.add_argument("--test-share", type=float, default=0.3, help="share of each class's polygons held out for "
                   "testing (default 0.3)")
    p.add_argument("--layer", help="layer of a multi-layer polygon file (default: every layer with --field)")
    p.add_argument("--bands", nargs="+", help="Sentinel-2 name of every image band, in file order")
    p.add_argument("--offset", type=float, help="DN offset (e.g. -1000) instead of the one from the metadata")
    p.add_argument("--learning-rate", type=float, default=LEARNING_RATE,
                   help=f"Nesterov Adam learning rate (default {LEARNING_RATE:g})")
    p.add_argument("--train-setting", action="append", default=[], metavar="KEY=VALUE",
                   help="a further training setting (a key of python -m core.train --config, value as YAML), "
                        "e.g. freeze=none; repeatable; for experiments")
    return p


def _settings(items: list[str]) -> dict[str, Any]:
    """{key: value} of --train-setting KEY=VALUE items, each value checked as core.train's config file checks it."""
    import yaml

    from .training.config import check_value, config_keys

    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in config_keys():
            raise UrbanMTLError(f"--train-setting {item!r}: give KEY=VALUE with a key of the training config "
                                f"({', '.join(config_keys())}).")
        values[key] = check_value(key, yaml.safe_load(text))
    return values


def _finetune(args) -> int:
    extra = _settings(args.train_setting)
    opts = FinetuneOptions(image=args.image, polygons=args.polygons, field=args.field, out=args.out,
                           model=args.model, epochs=args.epochs, seed=args.seed, test_share=args.test_share,
                           layer=args.layer, bands=args.bands, offset=args.offset, learning_rate=args.learning_rate,
                           refit=args.refit, distill=args.distill, freeze=args.freeze, extra=extra)

    def log(text: str) -> None:
        print(text, flush=True)

    with RunFolder(opts.out, log):          # claimed new or empty; emptied again if the run fails or is stopped
        result = finetune(opts, log=log)
    print(_summary(result))
    for text in result.get("warnings", []):
        print(f"warning: {text}")
    print(f"Wrote {Path(args.out) / 'model.keras'}, {Path(args.out) / 'accuracy.json'} and "
          f"{Path(args.out) / 'accuracy.html'}.")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """The CLI (exit statuses: core.common.cli.EXIT_HELP)."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: _finetune(args), stopped=f"what the run had written into {args.out} was removed")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
