"""Tile size and overlap against map quality and speed, measured in one run on the validation cities.

    .venv/bin/python bench/bench_tiling.py [--model models] [--configs 64/16/4 64/16/32 256/32/4 ...] [--repeat 2]

For each tiling (tile/overlap/batch, 10 m pixels and tiles per batch) the validation cities of the bundled model
(../shared/data/cities: Montpellier, Rio, Beihai; never trained on) are mapped by the engine and scored per
100 m cell against the teacher's labels (core.evaluate_maps): LCZ OA, built/natural OA, HSE MAE, and the mapping
time summed over the cities (the best of --repeat runs, the configurations interleaved so machine load hits them
alike). Prints one table and, with --out, writes it as JSON.

Why it matters: the network's attention (CBAM) pools over its whole input, so its answers depend on the size of
what it sees. The engine's default is the model's own training window (core.tiling.model_tiling).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
CITIES = REPO.parent / "shared" / "data" / "cities"
VALIDATION = ("montpellier_20171030", "rio_20171011", "beihai_20180309")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models"))
    p.add_argument("--configs", nargs="+", default=["256/32/4", "64/16/4", "64/16/32", "64/32/32"],
                   help="tile/overlap/batch")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--out")
    a = p.parse_args(argv)

    from core.evaluation.maps import evaluate_scenes

    manifests = [str(CITIES / f"{c}.yaml") for c in VALIDATION]
    missing = [m for m in manifests if not Path(m).exists()]
    if missing:
        print(f"error: {', '.join(missing)} not found (../shared/data/cities beside the checkout).", file=sys.stderr)
        return 2
    configs = [tuple(int(v) for v in c.split("/")) for c in a.configs]
    results: dict[tuple, dict] = {}
    evaluate_scenes(a.model, manifests[:1], log=lambda _: None)       # warm-up: TensorFlow, the model, caches
    for _ in range(a.repeat):
        for tile, overlap, batch in configs:
            scores = evaluate_scenes(a.model, manifests, log=lambda _: None, tile_size=tile, overlap=overlap,
                                     batch_size=batch)
            seconds = sum(s["seconds"] for s in scores)
            best = results.get((tile, overlap, batch))
            if best is None or seconds < best["seconds"]:
                results[(tile, overlap, batch)] = {"seconds": seconds, "scores": scores}
    base = results[configs[0]]["seconds"]
    print(f"model {a.model}; cities {', '.join(VALIDATION)}; best of {a.repeat} runs; time relative to "
          f"{'/'.join(map(str, configs[0]))}")
    print(f"{'tile/overlap/batch':>18} | {'LCZ OA':^20} | {'built/natural OA':^20} | {'HSE MAE':^20} | seconds (x)")
    table = []
    for config in configs:
        r = results[config]
        lcz = " ".join(f"{s['lcz']['oa']:.3f}" for s in r["scores"])
        bn = " ".join(f"{s['lcz']['built_natural_oa']:.3f}" for s in r["scores"])
        mae = " ".join(f"{s['hse']['mae']:.3f}" for s in r["scores"])
        print(f"{'/'.join(map(str, config)):>18} | {lcz:^20} | {bn:^20} | {mae:^20} | {r['seconds']:.1f} "
              f"({r['seconds'] / base:.2f})")
        table.append({"tile_size": config[0], "overlap": config[1], "batch_size": config[2],
                      "seconds": round(r["seconds"], 1), "scores": r["scores"]})
    if a.out:
        Path(a.out).write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
