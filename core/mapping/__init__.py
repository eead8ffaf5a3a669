"""Mapping a scene: predict_scene (options, checks, the network from its Networks, tiles, outputs, exports) and the
tile loop that streams batches through the network and blends them strip by strip (accumulate)."""

from .accumulate import Cancelled
from .predict import Networks, PredictOptions, PredictResult, predict_scene, validate_options

__all__ = ["Cancelled", "Networks", "PredictOptions", "PredictResult", "predict_scene", "validate_options"]
