"""Scoring models and maps: the paper's HSE and LCZ metrics (metrics), a model on labelled patches and scene tiles
(patches.evaluate), whole scenes mapped by the engine against their references per 100 m cell
(maps.evaluate_scenes), LCZ maps on held-out training areas as the LCZ Generator reports them (accuracy)."""

from .accuracy import bootstrap_ranges, polygon_confusions, score, scoring_cells
from .maps import evaluate_scenes, score_maps
from .patches import evaluate

__all__ = ["bootstrap_ranges", "evaluate", "evaluate_scenes", "polygon_confusions", "score", "score_maps",
           "scoring_cells"]
