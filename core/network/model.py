"""The multitask network of Qiu et al. (GRSL 2022): HSE density at 20 m and LCZ probabilities, built with Keras.
Saving and loading it with its model card: core.network.saving."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import keras
import numpy as np
from keras import layers, ops

from ..common.errors import UrbanMTLError
from ..common.spec import NUM_CLASSES

#: The comparison set of the paper (Table I); `mtl_learned_p2f` is the proposed configuration.
VARIANTS: dict[str, dict[str, Any]] = {
    "hse": dict(hse=True, lcz=False, cbam=True, p2f=False, weighting="single"),
    "lcz": dict(hse=False, lcz=True, cbam=True, p2f=False, weighting="single"),
    "mtl_equal": dict(hse=True, lcz=True, cbam=True, p2f=False, weighting="equal"),
    "mtl_learned": dict(hse=True, lcz=True, cbam=True, p2f=False, weighting="learned"),
    "mtl_learned_p2f": dict(hse=True, lcz=True, cbam=True, p2f=True, weighting="learned"),
    # The proposed configuration without its attention modules: the CBAM ablation.
    "mtl_no_cbam": dict(hse=True, lcz=True, cbam=False, p2f=True, weighting="learned"),
    # The proposed configuration with the task losses summed 1:1. The learned weights settle at about 0.5 / loss
    # for each task, which gives the LCZ cross-entropy (about 1.2) an eighth of the weight of the HSE loss
    # (about 0.15); 1:1 gives them the same (measured for the bundled data: models/MODEL_CARD.md).
    "mtl_equal_p2f": dict(hse=True, lcz=True, cbam=True, p2f=True, weighting="equal"),
}


@dataclass
class ModelConfig:
    """What defines a network: the paper's variant, its base width f and the number of input bands."""

    variant: str = "mtl_learned_p2f"
    base_width: int = 16
    in_bands: int = 10
    dropout: float = 0.1
    # Keras's default BatchNorm momentum (0.99) averages over ~100 steps; on the small datasets users bring
    # (a few hundred patches, tens of steps per epoch) the moving statistics then lag the weights and
    # inference-mode predictions collapse. 0.9 (~10 steps) tracks them; docs/method.md does not fix this value.
    bn_momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UrbanMTLError(
                f"Unknown model variant '{self.variant}'. Choose one of: {', '.join(VARIANTS)}."
            )
        if self.base_width < 1 or self.in_bands < 1:
            raise UrbanMTLError("base_width and in_bands must be positive integers.")

    @property
    def spec(self) -> dict[str, Any]:
        return VARIANTS[self.variant]

    @property
    def has_hse(self) -> bool:
        return self.spec["hse"]

    @property
    def has_lcz(self) -> bool:
        return self.spec["lcz"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- small layers that have no Keras equivalent (registered so saved models load without code changes) ---


@keras.saving.register_keras_serializable(package="urbanmtl")
class ChannelPool(layers.Layer):
    """Channel-wise mean and max, concatenated: (B, H, W, C) -> (B, H, W, 2). CBAM's spatial descriptor."""

    def call(self, x):
        return ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2,)


@keras.saving.register_keras_serializable(package="urbanmtl")
class ReferenceOrPrediction(layers.Layer):
    """P2F guide: the HSE reference where it exists, else the network's own (gradient-stopped) prediction.

    Inputs [prediction, reference], both (B, h, w, 1); reference NaN marks "no reference".
    """

    def call(self, inputs):
        prediction, reference = inputs
        prediction = ops.stop_gradient(prediction)
        return ops.where(ops.isnan(reference), prediction, reference)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="urbanmtl")
class BilinearUpsample(layers.Layer):
    """Bilinear upsampling by an integer factor for inputs of any (unknown) size: (B,h,w,C) -> (B,fh,fw,C).

    Keras's UpSampling2D needs static sizes in graph mode; scenes and patches come in any size.
    """

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        import tensorflow as tf  # Keras's resize needs static sizes in graph mode; TF's takes a tensor.

        size = tf.shape(x)[1:3] * self.factor
        return tf.image.resize(x, size, method="bilinear")

    def compute_output_shape(self, input_shape):
        scale = lambda n: None if n is None else n * self.factor  # noqa: E731
        return (input_shape[0], scale(input_shape[1]), scale(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="urbanmtl")
class WindowPool(layers.Layer):
    """Mean and max of a (B, H, W, C) input over square windows of `window` pixels whose centres lie every `stride`
    pixels, at (stride - 1) / 2 + stride * i: two (B, H / stride, W / stride, C) maps (H, W multiples of stride;
    window - stride even). Pixels of a window past the input's edge do not count. Separable: along the rows, then
    the columns, so a window costs 2 x window / stride operations per input pixel, not window squared."""

    def __init__(self, window: int, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.window, self.stride = int(window), int(stride)

    def call(self, x):
        import tensorflow as tf

        w, s = self.window, self.stride
        mean = tf.nn.avg_pool2d(tf.nn.avg_pool2d(x, (1, w), (1, s), "SAME"), (w, 1), (s, 1), "SAME")
        top = tf.nn.max_pool2d(tf.nn.max_pool2d(x, (1, w), (1, s), "SAME"), (w, 1), (s, 1), "SAME")
        return mean, top

    def compute_output_shape(self, input_shape):
        scale = lambda n: None if n is None else -(-n // self.stride)  # noqa: E731
        shape = (input_shape[0], scale(input_shape[1]), scale(input_shape[2]), input_shape[3])
        return shape, shape

    def get_config(self):
        return {**super().get_config(), "window": self.window, "stride": self.stride}


# --- blocks, in the order one draws them ---


def conv_block(x, filters: int, separable: bool, name: str, momentum: float = 0.9):
    """3x3 'same' convolution (plain or depthwise-separable), he_normal, then BatchNorm and ReLU."""
    if separable:
        x = layers.SeparableConv2D(
            filters, 3, padding="same", depthwise_initializer="he_normal",
            pointwise_initializer="he_normal", name=f"{name}_sepconv",
        )(x)
    else:
        x = layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def dual_pool(x, name: str):
    """2x2 max pool and 2x2 average pool side by side, concatenated (doubles the channels, halves the grid)."""
    return layers.Concatenate(name=name)(
        [layers.MaxPooling2D(2, name=f"{name}_max")(x), layers.AveragePooling2D(2, name=f"{name}_avg")(x)]
    )


#: Spacing (20 m pixels) of the points whose windows windowed attention pools (80 m); the attention between them
#: is interpolated bilinearly.
ATTENTION_STRIDE = 4


def cbam(x, channels: int, name: str, ratio: int = 8, window: Optional[int] = None):
    """Convolutional block attention: channel attention (shared MLP on avg and max pooling), then spatial.

    window None: the channel attention pools over the whole input (the paper's CBAM; how the network trains).
    window N (pixels of this 20 m grid): it pools over the N x N window around each point of a grid every
    ATTENTION_STRIDE pixels and is interpolated in between, so a pixel's attention comes from the window of
    the training size around it, whatever the size of the tile (mapping; the weights are the same)."""
    dense_1 = layers.Dense(channels // ratio, activation="relu", kernel_initializer="he_normal", name=f"{name}_mlp1")
    dense_2 = layers.Dense(channels, kernel_initializer="he_normal", name=f"{name}_mlp2")
    if window is None:
        avg = dense_2(dense_1(layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_gap")(x)))
        mx = dense_2(dense_1(layers.GlobalMaxPooling2D(keepdims=True, name=f"{name}_gmp")(x)))
    else:
        mean, top = WindowPool(window, ATTENTION_STRIDE, name=f"{name}_window")(x)
        avg, mx = dense_2(dense_1(mean)), dense_2(dense_1(top))
    channel = layers.Activation("sigmoid", name=f"{name}_channel")(layers.Add(name=f"{name}_add")([avg, mx]))
    if window is not None:
        channel = BilinearUpsample(ATTENTION_STRIDE, name=f"{name}_channel_up")(channel)
    x = layers.Multiply(name=f"{name}_channel_mul")([x, channel])
    spatial = layers.Conv2D(1, 7, padding="same", activation="sigmoid", kernel_initializer="he_normal",
                            name=f"{name}_spatial")(ChannelPool(name=f"{name}_pool")(x))
    return layers.Multiply(name=f"{name}_spatial_mul")([x, spatial])


def softmax_head(x, name: str):
    return layers.Conv2D(NUM_CLASSES, 1, activation="softmax", kernel_initializer="he_normal", name=name)(x)


def _build(config: ModelConfig, attention_window: Optional[int] = None) -> keras.Model:
    """The functional training network; P2F variants take a second input, the HSE reference. attention_window:
    see cbam (None for training)."""
    f, spec, m = config.base_width, config.spec, config.bn_momentum
    image = keras.Input((None, None, config.in_bands), name="image")
    inputs = {"image": image}

    x = conv_block(image, f, False, "block1a", m)
    x = conv_block(x, f, True, "block1b", m)
    x = conv_block(x, 2 * f, True, "block2a", m)
    x = conv_block(x, 2 * f, True, "block2b", m)
    merge0 = dual_pool(x, "merge0")                               # 4f channels, 20 m
    x = conv_block(merge0, 8 * f, True, "block3a", m)
    x = conv_block(x, 8 * f, True, "block3b", m)
    x = conv_block(x, 16 * f, True, "block4a", m)
    shared = conv_block(x, 16 * f, True, "block4b", m)               # F: 16f channels, 20 m

    outputs: dict[str, Any] = {}
    hse = None
    if spec["hse"]:
        h = cbam(shared, 16 * f, "hse_cbam", window=attention_window) if spec["cbam"] else shared
        h = layers.Dropout(config.dropout, name="hse_dropout")(h)
        hse = layers.Conv2D(1, 1, activation="sigmoid", kernel_initializer="he_normal", name="hse")(h)
        outputs["hse"] = hse

    if spec["lcz"]:
        l = cbam(shared, 16 * f, "lcz_cbam", window=attention_window) if spec["cbam"] else shared
        merge1 = dual_pool(l, "merge1")                           # 32f channels, 40 m
        l = layers.Dropout(config.dropout, name="lcz_dropout1")(merge1)
        l = conv_block(l, 32 * f, True, "block5", m)
        merge2 = dual_pool(l, "merge2")                           # 64f channels, 80 m
        l = layers.Dropout(config.dropout, name="lcz_dropout2")(merge2)
        l = conv_block(l, 64 * f, True, "block6", m)
        up2 = lambda t, n: BilinearUpsample(2, name=n)(t)  # noqa: E731
        up4 = lambda t, n: BilinearUpsample(4, name=n)(t)  # noqa: E731
        members = [
            softmax_head(merge0, "lcz_ds0"),                       # deep supervision, 20 m
            up2(softmax_head(merge1, "lcz_ds1"), "lcz_ds1_up"),   # 40 m -> 20 m
            up4(softmax_head(merge2, "lcz_ds2"), "lcz_ds2_up"),   # 80 m -> 20 m
            up4(softmax_head(l, "lcz_main"), "lcz_main_up"),       # 80 m -> 20 m
        ]
        if spec["p2f"]:
            reference = keras.Input((None, None, 1), name="hse_guide")
            inputs["hse_guide"] = reference
            guide = ReferenceOrPrediction(name="p2f_guide")([hse, reference])
            members.append(softmax_head(layers.Multiply(name="p2f_mul")([shared, guide]), "lcz_p2f"))
        outputs["lcz"] = layers.Average(name="lcz")(members)     # averaged probabilities, 20 m

    return keras.Model(inputs, outputs, name=f"urbanmtl_{config.variant}")


@keras.saving.register_keras_serializable(package="urbanmtl")
class NoReference(layers.Layer):
    """An all-NaN HSE guide at 20 m for an image (B, H, W, C): "no reference here, use the prediction"."""

    def call(self, image):
        shape = ops.shape(image)
        return ops.full((shape[0], shape[1] // 2, shape[2] // 2, 1), float("nan"), dtype=image.dtype)

    def compute_output_shape(self, input_shape):
        half = lambda n: None if n is None else n // 2  # noqa: E731
        return (input_shape[0], half(input_shape[1]), half(input_shape[2]), 1)


def build_networks(config: ModelConfig, attention_window: Optional[int] = None) -> tuple[keras.Model, keras.Model]:
    """(training network, inference network) sharing every weight. attention_window (20 m pixels): the CBAMs'
    channel attention pools over windows of that size instead of the whole input (cbam; for mapping).

    Training network: a dict input {"image": (B,H,W,bands)} plus, for P2F variants, {"hse_guide":
    (B,H/2,W/2,1)} (the HSE reference, NaN where there is none); outputs {"hse": (B,H/2,W/2,1) 0..1,
    "lcz": (B,H/2,W/2,17) averaged probabilities}, only the variant's tasks.
    Inference network: the image alone, (B,H,W,bands) reflectance with H and W multiples of 8; P2F is
    fed by the network's own HSE prediction in the same forward pass.
    """
    train = _build(config, attention_window)
    image = keras.Input((None, None, config.in_bands), name="image")
    feed = {"image": image}
    if config.spec["p2f"]:
        feed["hse_guide"] = NoReference(name="no_reference")(image)
    infer = keras.Model(image, train(feed), name=f"{train.name}_inference")
    return train, infer


def with_attention_window(config: ModelConfig, network: keras.Model, window: int) -> keras.Model:
    """The inference network `network` (of `config`, any attention) rebuilt with windowed channel attention of
    `window` 20 m pixels (cbam) and its weights, layer by layer: the same map whatever the tile size."""
    _, windowed = build_networks(config, attention_window=window)
    name = f"urbanmtl_{config.variant}"
    source, target = network.get_layer(name), windowed.get_layer(name)
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
    return windowed


def count_parameters(model: keras.Model) -> int:
    """Number of trainable scalars."""
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))
