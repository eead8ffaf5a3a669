"""urbanmtl engine: multitask HSE regression and LCZ classification from Sentinel-2, without QGIS.

Packages, each importing only those above it in this list (docs/architecture.md draws them):
common (contract, bands, LCZ legend, errors) - inputs (reading a scene) - outputs (writing maps) - tiling (tile
layouts) - network (the model) - data (training datasets) - mapping (predict_scene) - evaluation (scores) -
training (core.training.run.train) - finetuning (training areas) - cluster (many scenes on Dask).
Entry points, above every package: the command lines core.predict, core.train, core.evaluate, core.evaluate_maps,
core.finetune, core.batch, and the QGIS plugin's engine processes core.worker and core.finetune_worker.
"""

from .common import __version__

__all__ = ["__version__"]
