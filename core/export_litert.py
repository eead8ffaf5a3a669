"""The command line of the LiteRT export: python -m core.export_litert [MODEL] [--check SCENE ...].

Writes the mapping network of MODEL (a model.keras or a run folder; default: the bundled model) as LiteRT files
beside it (model.tflite with a dynamic input shape, model_1x512x512.tflite for the default tile) and names them in
its card, so that mapping on the CPU runs on LiteRT without TensorFlow (core.network.runtime). core.train and
core.finetune already write them for every model they save; this command is for models saved before, and for the
release check of the bundled model:

    python -m core.export_litert --check ../shared/data/cities/*_S2L1C_10band.tif

maps every scene given with both runtimes and writes nothing unless every pair of maps is the same by the rule of
core.mapping.agreement (LCZ equal in at least 99.9 % of the cells, HSE within 0.001). Exit status: 0 written,
1 a check failed (nothing written), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from .common.atomic import atomic_write
from .common.errors import UrbanMTLError
from .common.options import PredictOptions
from .mapping.agreement import Agreement, map_agreement
from .mapping.predict import predict_scene
from .network.export import litert_files
from .network.files import LITERT_KEY, card_path_for
from .network.saving import load_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.export_litert", description=__doc__.splitlines()[0],
                                epilog="Exit status: 0 written, 1 a check failed (nothing written), 2 bad input.")
    p.add_argument("model", nargs="?", help="model.keras or training run folder (default: the bundled model)")
    p.add_argument("--check", nargs="+", metavar="SCENE", default=[],
                   help="map these scenes with LiteRT and TensorFlow first; write only if all maps are the same")
    return p


def check_export(model: Path, card: dict[str, Any], files: dict[str, bytes], scenes: Sequence[str],
                 say=print) -> list[tuple[str, Agreement]]:
    """Map each scene with the new export (LiteRT) and with TensorFlow, in a scratch copy of the model folder; the
    agreement of each pair."""
    results = []
    with tempfile.TemporaryDirectory(prefix="urbanmtl-check-") as tmp:
        folder = Path(tmp)
        shutil.copyfile(model, folder / model.name)
        card_path_for(folder / model.name).write_text(json.dumps(card))
        for name, data in files.items():
            (folder / name).write_bytes(data)
        for scene in scenes:
            outputs = {}
            for runtime in ("litert", "tensorflow"):
                hse, lcz = folder / f"{runtime}_hse.tif", folder / f"{runtime}_lcz.tif"
                predict_scene(scene, str(hse), str(lcz), model_path=str(folder / model.name),
                              options=PredictOptions(runtime=runtime, overwrite=True))
                outputs[runtime] = (hse, lcz)
            agreement = map_agreement(*outputs["litert"], *outputs["tensorflow"])
            say(f"{'same' if agreement.same else 'DIFFERENT'}: {Path(scene).name}: {agreement.describe()}")
            results.append((scene, agreement))
    return results


def write_export(model: Path, card: dict[str, Any], files: dict[str, bytes]) -> None:
    """The LiteRT files beside the model, then its card naming them."""
    for name, data in files.items():
        with atomic_write(model.with_name(name)) as tmp:
            tmp.write_bytes(data)
    with atomic_write(card_path_for(model)) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    loaded = load_model(args.model)
    card = dict(loaded.card)
    files, entry = litert_files(loaded.network, card)
    card[LITERT_KEY] = entry
    if args.check:
        results = check_export(loaded.path, card, files, args.check)
        failed = [scene for scene, agreement in results if not agreement.same]
        if failed:
            print(f"error: LiteRT and TensorFlow map {len(failed)} of {len(results)} scenes differently "
                  f"({', '.join(Path(s).name for s in failed)}); nothing was written.", file=sys.stderr)
            return 1
        entry["checked"] = {"scenes": len(results),
                            "lowest_lcz_share": min(a.lcz_share for _, a in results),
                            "largest_hse_difference": max(a.hse_max for _, a in results),
                            "rule": "LCZ equal in >= 99.9 % of cells and HSE within 0.001 (core.mapping.agreement)"}
    write_export(loaded.path, card, files)
    print(f"Wrote {', '.join(files)} beside {loaded.path} and named them in its card"
          + (f", after {len(args.check)} scenes mapped the same on both runtimes" if args.check else "")
          + f" ({time.perf_counter() - started:.0f} s).")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UrbanMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
