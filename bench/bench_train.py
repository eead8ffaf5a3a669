"""Training throughput of the default configuration: 128x128 patches per second (run by hand).

    .venv/bin/python bench/bench_train.py [--variant mtl_learned_p2f] [--batch-size 8] [--steps 20]

Synthetic reflectance and labels (speed does not depend on values); the first steps (graph tracing) are
excluded. Prints one line per device TensorFlow sees plus the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def measure(device: str, variant: str, batch: int, steps: int, size: int) -> float:
    import keras
    import tensorflow as tf

    from core.network.model import ModelConfig, build_networks
    from core.training.trainer import MultitaskTrainer

    with tf.device(device):
        cfg = ModelConfig(variant=variant)
        train_net, _ = build_networks(cfg)
        tasks = tuple(t for t in ("hse", "lcz") if getattr(cfg, f"has_{t}"))
        trainer = MultitaskTrainer(train_net, cfg.spec["weighting"], tasks)
        trainer.compile(optimizer=keras.optimizers.Nadam(0.002))
        rng = np.random.default_rng(0)
        x = {"image": rng.random((batch, size, size, 10), dtype=np.float32)}
        lcz = np.zeros((batch, size, size, 17), np.float32)
        lcz[..., 13] = 1
        y = {"hse": rng.random((batch, size // 2, size // 2, 1), dtype=np.float32), "lcz": lcz}
        ds = tf.data.Dataset.from_tensors((x, y)).repeat()
        trainer.fit(ds, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)          # trace and warm up
        start = time.perf_counter()
        trainer.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
        return steps * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="mtl_learned_p2f")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=128)
    args = p.parse_args()
    import tensorflow as tf

    devices = ["/CPU:0"] + [f"/GPU:{i}" for i, _ in enumerate(tf.config.list_physical_devices("GPU"))]
    print(f"variant={args.variant} batch={args.batch_size} patch={args.size}x{args.size} "
          f"cpus={os.cpu_count()} tensorflow={tf.__version__}")
    for device in devices:
        rate = measure(device, args.variant, args.batch_size, args.steps, args.size)
        print(f"{device}: {rate:.2f} patches/s ({rate * 3600:.0f} patches/hour)")


if __name__ == "__main__":
    main()
