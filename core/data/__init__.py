"""Training and evaluation data: readers of patch files and scenes, splits, batches and the tf.data pipeline.

Usage::

    from core.data import open_datasets, iterate_batches, steps_per_epoch, tf_dataset
    datasets = open_datasets("scene.yaml", patch_size=128)          # or "so2sat:/data/training.h5"
    train, val = datasets[0].split(val_fraction=0.2, seed=0)
    for x, y in iterate_batches([train], 8, training=True, seed=0, epoch=0):
        x["image"]  # (B, 128, 128, 10) float32 reflectance, MODEL_BANDS order, nodata filled (core.inputs.fill)
        y["hse"]    # (B, 64, 64, 1) float32 0..1 at 20 m, NaN = no reference
        y["lcz"]    # (B, 128, 128, 17) float32 probabilities at 10 m, all-zero row = no reference

Formats: see `core.data.patches` (authors, so2sat, eurosat), `core.data.manifest` (the scene manifest schema),
`core.data.scene` (scene sampling) and `core.data.formats` (detection, the shared data folder).
"""

from .base import Dataset, check_patch_size
from .batches import iterate_batches, steps_per_epoch, tf_dataset
from .formats import FORMATS, detect_format, open_datasets, split_spec
from .manifest import MANIFEST_KEYS, SceneSpec, load_manifest
from .patches import AuthorsDataset, EuroSATDataset, PatchDataset, So2SatDataset
from .scene import SceneDataset

__all__ = [
    "Dataset",
    "PatchDataset",
    "AuthorsDataset",
    "So2SatDataset",
    "EuroSATDataset",
    "SceneDataset",
    "SceneSpec",
    "MANIFEST_KEYS",
    "FORMATS",
    "open_datasets",
    "detect_format",
    "split_spec",
    "load_manifest",
    "check_patch_size",
    "iterate_batches",
    "steps_per_epoch",
    "tf_dataset",
]
