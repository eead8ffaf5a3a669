"""The command line of fine-tuning: python -m core.finetune --image S2.tif --polygons areas.gpkg --field lcz --out RUN
(see core.finetune). Exit status 0 done, 2 a problem the message explains."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from .errors import UrbanMTLError
from .finetune import finetune
from .finetune_setup import LEARNING_RATE, MAX_EPOCHS, MIN_EPOCHS, PATCH_SIZE, TRAIN_WINDOWS, FinetuneOptions


def _summary(result: dict[str, Any]) -> str:
    b, a = result["before"], result["after"]
    text = (f"OA {b['oa']:.3f} -> {a['oa']:.3f} ({a['oa'] - b['oa']:+.3f}) on {a['cells']} test cells of "
            f"{result['split']['n_test']} held-out polygons; OA_bu {b['oa_bu']:.3f} -> {a['oa_bu']:.3f}, OA_w "
            f"{b['oa_w']:.3f} -> {a['oa_w']:.3f}")
    ci = result.get("bootstrap")
    if ci:
        text += f"; gain 95 % interval {ci['oa_gain_95'][0]:+.3f} to {ci['oa_gain_95'][1]:+.3f}"
    return text + "."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.finetune",
        description="Fine-tune the urbanmtl network on LCZ training areas (polygons) drawn over a Sentinel-2 image, "
                    "then score the start and the fine-tuned model on held-out polygons (accuracy.json/.html).")
    p.add_argument("--image", required=True, help="Sentinel-2 raster (anything core.predict reads)")
    p.add_argument("--polygons", required=True, help="training areas: GeoPackage, shapefile, GeoJSON, KML, ...")
    p.add_argument("--field", required=True, help="attribute holding the class: 1-17, 1-10/A-G or 101-107")
    p.add_argument("--out", required=True, help="run folder to create (model.keras, accuracy.json, ...)")
    p.add_argument("--model", help="start model: model.keras or a run folder (default: the bundled model)")
    p.add_argument("--epochs", type=int, help=f"epochs (default: about {TRAIN_WINDOWS} training windows of "
                   f"{PATCH_SIZE} px, {MIN_EPOCHS}-{MAX_EPOCHS} epochs)")
    p.add_argument("--no-replay", dest="replay", action="store_false",
                   help="train on the polygons only, not also on the start model's map around them")
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
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    opts = FinetuneOptions(image=args.image, polygons=args.polygons, field=args.field, out=args.out,
                           model=args.model, epochs=args.epochs, seed=args.seed, test_share=args.test_share,
                           layer=args.layer, bands=args.bands, offset=args.offset, learning_rate=args.learning_rate,
                           replay=args.replay, refit=args.refit)
    try:
        result = finetune(opts, log=lambda text: print(text, flush=True))
    except UrbanMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_summary(result))
    print(f"Wrote {Path(args.out) / 'model.keras'}, {Path(args.out) / 'accuracy.json'} and "
          f"{Path(args.out) / 'accuracy.html'}.")
    return 0
