"""`python -m core.train`: the command line of training. Flags (and a --config file) become a TrainConfig, then
core.training.run.train runs it; a user error exits with status 2 and one line on stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

from .common.cli import EXIT_HELP, run_command
from .common.errors import UrbanMTLError
from .training.config import config_keys, load_config_file, make_config


def build_parser() -> argparse.ArgumentParser:
    """The flags of `python -m core.train`; a flag left out is None, so the config file or the default applies."""
    p = argparse.ArgumentParser(
        prog="python -m core.train",
        description="Train the urbanmtl multitask network (HSE density + LCZ) and write a run folder with "
                    "model.keras, model_card.json, log.csv, checkpoints, TensorBoard logs and a loss curve. "
                    "Defaults are the paper's (Qiu et al. 2022); a --config file (YAML/JSON) sets any of them, "
                    "flags override the file.",
        epilog=EXIT_HELP + " A stop keeps the checkpoints: the same command with --resume goes on.",
    )
    p.add_argument("--data", nargs="+", help="training datasets: paths, format detected from content, or "
                   "FORMAT:PATH with FORMAT in authors, so2sat, eurosat, scene, shared")
    p.add_argument("--val-data", nargs="+", help="validation datasets (default: split --val-fraction off the "
                   "training data by patch, or by area for scenes)")
    p.add_argument("--val-fraction", type=float, help="share split off for validation when no --val-data is "
                   "given (default 0.2)")
    p.add_argument("--split-seed", type=int, help="seed of that split (default 0), independent of --seed")
    p.add_argument("--balance", choices=["area", "scene"],
                   help="windows per epoch of the scenes of a folder of manifests: in proportion to their area "
                        "(default) or the same for every scene")
    p.add_argument("--variant", help="hse, lcz, mtl_equal, mtl_learned, mtl_learned_p2f (default), mtl_no_cbam, "
                   "mtl_equal_p2f")
    p.add_argument("--base-width", type=int, help="base number of filters f (default 16)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 100)")
    p.add_argument("--batch-size", type=int, help="patches per batch, over all GPUs (default 8)")
    p.add_argument("--patch-size", type=int, help="training patch size in 10 m pixels (default 128)")
    p.add_argument("--learning-rate", type=float, help="Nesterov Adam learning rate (default 0.002)")
    p.add_argument("--lr-decay", type=float, help="learning-rate factor applied every --lr-decay-every epochs "
                   "(default 0.75)")
    p.add_argument("--lr-decay-every", type=int, help="epochs between learning-rate decays (default 2)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 10)")
    p.add_argument("--spectral-jitter", type=float, help="sigma of per-band multiplicative jitter (default 0)")
    p.add_argument("--ema", type=float, help="momentum of a moving average of the weights that is validated and "
                   "kept as the model, e.g. 0.998 (default 0 = off)")
    p.add_argument("--label-margin", type=int, help="10 m pixels on each side of a training window that the "
                   "losses leave out, e.g. 16 (default 0); the model then maps with tiles overlapping by twice it")
    p.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                   help="switch off the 8 flips/rotations")
    p.add_argument("--seed", type=int, help="seed for data order, augmentation and weights (deterministic run)")
    p.add_argument("--init-from", help="fine-tune: start from this model (model.keras or run folder); its card "
                   "sets the architecture")
    p.add_argument("--distribute", choices=["none", "mirrored", "multiworker"],
                   help="none (default), mirrored (all GPUs of this machine), multiworker (several machines; "
                        "needs TF_CONFIG)")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--config", help="YAML or JSON file with any of: " + ", ".join(config_keys()))
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    return p


def _train(args) -> int:
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "resume")}
    if args.resume:
        # A resumed run keeps its data, model and schedule; only the epoch budget may change.
        if not args.out:
            raise UrbanMTLError("--resume needs --out RUN_DIR (the run to continue).")
        saved = Path(args.out) / "config.json"
        if not saved.exists():
            raise UrbanMTLError(f"Cannot resume: '{args.out}' holds no training run (no config.json). "
                                f"Start a new run without --resume.")
        cfg = make_config(json.loads(saved.read_text()), {"epochs": args.epochs, "out": args.out})
    else:
        file_values = load_config_file(args.config) if args.config else {}
        cfg = make_config(file_values, flags)
    from .training.run import train

    train(cfg, resume=args.resume)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """The CLI (exit statuses: core.common.cli.EXIT_HELP). A stop keeps the run folder's last checkpoint, so the
    same command with --resume goes on from its last finished epoch."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: _train(args), stopped=f"the checkpoints in {args.out or 'the run folder'} are kept; "
                                                    f"add --resume to the same command to go on")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
