"""The command line of core.evaluation.maps: map whole scenes with the engine and score the maps per 100 m cell.

    python -m core.evaluate_maps --model models SCENE.yaml [SCENE.yaml ...] [--out scores.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .common.errors import UrbanMTLError
from .common.spec import ATTENTIONS
from .evaluation.maps import evaluate_scenes

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.evaluate_maps", description="Map whole scenes (their "
                                "manifests) with the engine and score the maps against the manifests' references.")
    p.add_argument("manifests", nargs="+", help="scene manifests (YAML/JSON) with an LCZ and/or HSE reference")
    p.add_argument("--model", help="model.keras or run folder (default: the bundled model)")
    p.add_argument("--out", help="write the scores as JSON here")
    p.add_argument("--keep-maps", help="keep the maps in this folder")
    p.add_argument("--tile-size", type=int, help="tile size in 10 m pixels (default: core.predict's)")
    p.add_argument("--overlap", type=int, help="tile overlap in 10 m pixels (default: core.predict's)")
    p.add_argument("--attention", choices=ATTENTIONS, help="as core.predict --attention (default: window)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        scores = evaluate_scenes(args.model, args.manifests, keep_dir=args.keep_maps, tile_size=args.tile_size,
                                 overlap=args.overlap, attention=args.attention)
    except UrbanMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(scores, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
