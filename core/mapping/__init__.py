"""Mapping a scene: predict_scene (options, checks, the network from its Networks on the runtime chosen, tiles,
outputs, exports) and the tile loop that streams batches through the network and blends them strip by strip (accumulate)."""

from ..common.errors import Cancelled
from .networks import Networks
from .predict import PredictOptions, PredictResult, predict_scene, validate_options

__all__ = ["Cancelled", "Networks", "PredictOptions", "PredictResult", "predict_scene", "validate_options"]
