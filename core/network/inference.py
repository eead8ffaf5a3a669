"""The TensorFlow side of a mapping run: where the network runs (select_device) and its traced call on batches
(NetworkRunner). TensorFlow is imported inside the functions, so importing this module does not load it.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..common.errors import UrbanMTLError
from ..common.signals import signals_deferred
from ..common.spec import MODEL_BANDS


def select_device(device: str) -> str:
    """The TensorFlow device to run on: '/GPU:0' when one is visible (auto) or asked for (gpu), else '/CPU:0'.

    device='cpu' hides the GPUs from TensorFlow when it has not touched them yet, and in any case pins the
    network to the CPU. device='gpu' without a visible GPU is an error.
    """
    import tensorflow as tf

    if device == "cpu":
        try:
            tf.config.set_visible_devices([], "GPU")
        except (RuntimeError, ValueError):
            pass  # TensorFlow is initialised already; tf.device below still keeps the work on the CPU
        return "/CPU:0"
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise UrbanMTLError(
            "device 'gpu' was asked for, but TensorFlow sees no GPU (CUDA drivers and a GPU build of "
            "TensorFlow are needed). Use device 'auto' or 'cpu'."
        )
    return "/GPU:0" if gpus else "/CPU:0"


def tensorflow_version() -> str:
    import tensorflow as tf

    return tf.__version__


def tensorflow_threads() -> Optional[int]:
    """The threads TensorFlow's operations use (TF_NUM_INTRAOP_THREADS or tf.config), None when it picks (every
    core)."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or None


class NetworkRunner:
    """Calls the inference network on batches (B, H, W, 10) float32 -> (hse (B, H/2, W/2), lcz (B, H/2, W/2, 17)).

    The call is traced once by tf.function for any batch and tile size (None dimensions), so the per-batch
    cost is the network's compute, not Keras's eager dispatch of every layer.
    """

    runtime = "tensorflow"

    def __init__(self, network: Any, device: str) -> None:
        import tensorflow as tf

        self.device = device
        self._tf = tf
        # autograph=False: the network has no Python control flow to convert, and autograph cannot parse a
        # lambda's source (it warns). Eager calls were 1.6x slower per 256 x 256 batch of 4 on CPU.
        # Making the function flattens its signature in TensorFlow's C++ (see signals_deferred).
        with signals_deferred():
            self._fn = tf.function(
                lambda x: network(x, training=False),
                input_signature=[tf.TensorSpec([None, None, None, len(MODEL_BANDS)], tf.float32)],
                autograph=False,
            )

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with signals_deferred(), self._tf.device(self.device):
            out = self._fn(self._tf.constant(batch, dtype=self._tf.float32))
            hse, lcz = np.asarray(out["hse"])[..., 0], np.asarray(out["lcz"])
        return hse, lcz


def predict_batch(network: Any, image: np.ndarray) -> dict[str, np.ndarray]:
    """Run the inference network on a batch (B, H, W, 10) float32 reflectance (H, W multiples of 8).

    Returns numpy {"hse": (B, H/2, W/2) 0..1, "lcz": (B, H/2, W/2, 17) probabilities}, the tasks the
    model has.
    """
    out = network(np.asarray(image, dtype=np.float32), training=False)
    result = {k: np.asarray(v) for k, v in out.items()}
    if "hse" in result:
        result["hse"] = result["hse"][..., 0]
    return result
