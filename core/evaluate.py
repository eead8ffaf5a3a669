"""`python -m core.evaluate`: the command line of evaluation; flags to core.evaluation.patches.evaluate, the
headline scores to the terminal, status 2 with one line on stderr for a problem the user can fix."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .common.errors import UrbanMTLError


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python -m core.evaluate`."""
    from .evaluation.patches import DEFAULT_PATCH_SIZE, SUBSETS

    parser = argparse.ArgumentParser(
        prog="python -m core.evaluate",
        description=(
            "Score a trained urbanmtl model on labelled data with the metrics of Qiu et al. (GRSL 2022): "
            "HSE mean absolute error in percentage points and, after thresholding, Kappa, average accuracy, "
            "recall and F1; LCZ overall accuracy, Kappa, average accuracy, weighted accuracy, OA_urb, OA_bu, "
            "per-class F1 and the confusion matrix. A task is reported only when the model predicts it and the "
            "data has a reference for it."
        ),
    )
    parser.add_argument("--model", default=None,
                        help="The model: a training run folder (from 'python -m core.train') or its model.keras. "
                             "Default: the model bundled with the plugin.")
    parser.add_argument("--data", nargs="+", required=True, metavar="DATASET",
                        help="One or more labelled datasets: a patch HDF5 (authors' layout, So2Sat LCZ42, the "
                             "EuroSAT teacher file), a scene manifest (.yaml/.json), or the shared data folder. "
                             "Prefix FORMAT: (authors, so2sat, eurosat, scene, shared) to force a format.")
    parser.add_argument("--out", required=True, metavar="METRICS.json",
                        help="Where to write the metrics as JSON.")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N",
                        help="Patches per forward pass (default 8). Lower it if memory runs out.")
    parser.add_argument("--patch-size", type=int, default=None, metavar="N",
                        help=f"Tile size in 10 m pixels for scene datasets, a multiple of 8 (default "
                             f"{DEFAULT_PATCH_SIZE}; with --subset, the training patch size from the model card). "
                             "Patch files keep their own patch size.")
    parser.add_argument("--subset", choices=SUBSETS, default="all",
                        help="Score every patch (all, default), or only the validation (val) or training (train) "
                             "part of each dataset as 'python -m core.train' splits it without --val-data. The split "
                             "settings (and the scene blocks' patch size) come from the model card.")
    parser.add_argument("--val-fraction", type=float, default=None, metavar="F",
                        help="With --subset: the share split off for validation (default: the model card's).")
    parser.add_argument("--split-seed", type=int, default=None, metavar="N",
                        help="With --subset: the seed of the split (default: the model card's, else 0).")
    parser.add_argument("--hse-threshold", type=float, default=0.5, metavar="T",
                        help="HSE fraction from which a pixel counts as built for Kappa, AA, recall and F1 "
                             "(default 0.5).")
    parser.add_argument("--confusion-png", default=None, metavar="PATH",
                        help="Where to draw the LCZ confusion matrix (default: METRICS_confusion.png beside "
                             "--out). Drawn only when there is an LCZ result.")
    parser.add_argument("--no-progress", action="store_true", help="Do not show the progress bar.")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 for a problem the user can fix)."""
    from .evaluation.patches import default_confusion_png, evaluate, summary

    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    png = Path(args.confusion_png) if args.confusion_png else default_confusion_png(args.out)
    try:
        result = evaluate(
            args.model, args.data, batch_size=args.batch_size, patch_size=args.patch_size,
            hse_threshold=args.hse_threshold, out=args.out, confusion_png=png, progress=not args.no_progress,
            subset=args.subset, val_fraction=args.val_fraction, split_seed=args.split_seed,
        )
    except UrbanMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    print(f"Wrote {args.out}")
    if "lcz" in result:
        print(f"Wrote {png}")
    elif args.confusion_png:
        print(f"No LCZ result, so no confusion matrix was drawn at {png}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
