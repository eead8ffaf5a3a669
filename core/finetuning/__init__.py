"""Fine-tuning on the user's LCZ training areas: run.finetune (split, map, train, score, refit, report), what it
trains on and how (setup), the training areas read, checked and split whole (areas.read_training_areas,
areas.split_areas), and the LCZ Generator's random forest on the same areas, the peer it is scored beside (forest).
Light to import (the QGIS plugin reads setup's defaults): areas, which loads rasterio, is not imported here."""

from .forest import cell_features, predict_codes, train_forest
from .run import finetune
from .setup import FinetuneOptions

__all__ = ["FinetuneOptions", "cell_features", "finetune", "predict_codes", "train_forest"]
