"""The mapping network as a LiteRT model: the network the engine maps with (windowed attention of the card's window,
core.tiling.attention_window) exported through a SavedModel (Keras's model.export) and the LiteRT converter's
from_saved_model, with a dynamic input shape (batch, height, width all free), so every tile the tiler makes runs
on it after a resize of the input tensor. Needs TensorFlow; the mapping process that runs the file does not.

Two traps of the converter, measured: from_concrete_functions silently gave a 109 KB model with no weights in it,
and from_keras_model fails with Keras 3; the SavedModel route has neither.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

import keras

from ..common.errors import UrbanMTLError
from ..common.signals import signals_deferred
from ..common.spec import default_batch_size
from ..tiling import attention_window, model_tiling
from .files import LITERT_FILE, fixed_litert_name
from .model import ModelConfig, with_attention_window


def mapping_network(network: keras.Model, card: dict[str, Any]) -> tuple[keras.Model, Optional[int]]:
    """(the network the engine maps with by default, its attention window in 20 m pixels or None): the inference
    network rebuilt with windowed attention when the card gives the training windows, else as it is."""
    window = attention_window(card)
    if window is None:
        return network, None
    config = ModelConfig(**(card.get("config") or {}))
    return with_attention_window(config, network, window), window


def litert_bytes(network: keras.Model) -> bytes:
    """The LiteRT flatbuffer of a Keras inference network (B, H, W, 10) -> {"hse", "lcz"}, shapes left dynamic."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="urbanmtl-export-") as tmp:
        saved = Path(tmp) / "saved_model"
        with signals_deferred():
            network.export(str(saved), format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            data = converter.convert()
    weights = sum(int(w.numpy().nbytes) for w in network.weights)
    if len(data) < weights // 2:
        raise UrbanMTLError(f"The LiteRT export is {len(data)} bytes, less than half the network's {weights} bytes "
                            f"of weights: the converter dropped them. Export again with the same TensorFlow.")
    return data


def default_shape(card: dict[str, Any], window: Optional[int], bands: int) -> tuple[int, int, int, int]:
    """The batch shape (B, H, W, bands) the engine runs most often for this model: its default tile
    (core.tiling.model_tiling) in its default batch (core.common.spec.default_batch_size)."""
    tile, _ = model_tiling(card, windowed=window is not None)
    return (default_batch_size(tile), tile, tile, bands)


def litert_files(network: keras.Model, card: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The LiteRT files of a model's mapping network ({file name: bytes}) and the card's "litert" entry naming them:
    model.tflite with a dynamic input shape (every tile the tiler makes) and one of the default batch shape
    (default_shape). The fixed one is what runs on nearly every tile of a large scene: the converter folds its
    shape arithmetic (the upsampling sizes, the P2F guide's shape) and XNNPACK takes the whole graph, 0.229 s
    against 0.267 s per 512 x 512 px tile resized into the dynamic file (2 cores, Xeon with AVX-512)."""
    import tensorflow as tf

    mapping, window = mapping_network(network, card)
    shape = default_shape(card, window, int(mapping.inputs[0].shape[-1]))
    image = keras.Input(batch_shape=shape, name="image")
    fixed = keras.Model(image, mapping(image), name=f"{mapping.name}_fixed")
    files = {LITERT_FILE: litert_bytes(mapping), fixed_litert_name(shape): litert_bytes(fixed)}
    entry = {"file": LITERT_FILE, "attention_window": window, "input": "dynamic (batch, height, width)",
             "fixed": [{"file": fixed_litert_name(shape), "shape": list(shape)}],
             "bytes": {name: len(data) for name, data in files.items()},
             "converter": f"tensorflow {tf.__version__} TFLiteConverter.from_saved_model",
             "maps": "on the CPU, LiteRT (XNNPACK) maps with these files; TensorFlow (GPU, --runtime tensorflow, "
                     "--attention tile) maps with model.keras"}
    return files, entry
