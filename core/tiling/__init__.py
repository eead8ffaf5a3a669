"""Where a scene's tiles go and how their outputs blend: tile layouts (make_layout, the authors' scheme too), the
tiling a model maps with by default (model_tiling), raised-cosine blending weights. numpy only: no TensorFlow."""

from .layout import Tile, TileLayout, attention_window, batched, blend_weights, check_tiling, coverage, make_layout, \
    model_tiling, ramp_profile, tile_starts, training_patch

__all__ = ["Tile", "TileLayout", "attention_window", "batched", "blend_weights", "check_tiling", "coverage",
           "make_layout", "model_tiling", "ramp_profile", "tile_starts", "training_patch"]
