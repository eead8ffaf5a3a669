"""Batches for training and evaluation: seeded order, augmentation, and the tf.data wrapper Keras consumes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from ..common.errors import UrbanMTLError
from ..common.lcz import NUM_CLASSES
from .augment import NUM_TRANSFORMS, atmosphere as apply_atmosphere, augment_sample, spectral_jitter as apply_jitter
from .base import NUM_BANDS, Dataset

if TYPE_CHECKING:  # TensorFlow is imported only when a tf.data pipeline is built.
    import tensorflow as tf

Batch = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]


def _check_args(datasets: Sequence[Dataset], batch_size: int) -> None:
    if not datasets:
        raise UrbanMTLError("No datasets were given to read batches from. Give at least one data path.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UrbanMTLError(f"batch_size must be a positive whole number, got {batch_size!r}. Use e.g. 8.")


def _check_seed(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UrbanMTLError(f"{name} must be a non-negative whole number, got {value!r}.")
    return int(value)


def can_mix(datasets: Sequence[Dataset]) -> bool:
    """True when batches may mix samples of several datasets (all have the same patch size)."""
    return len({ds.patch_size for ds in datasets}) == 1


def steps_per_epoch(datasets: Sequence[Dataset], batch_size: int, training: bool, mix: bool = False) -> int:
    """Number of batches `iterate_batches(datasets, batch_size, training=training, mix=mix)` yields: per dataset
    ceil(samples / batch_size), samples = len(dataset) when training, every patch/tile otherwise; with
    mixed training batches ceil(all samples / batch_size)."""
    _check_args(datasets, batch_size)
    if training and mix and can_mix(datasets):
        return math.ceil(sum(len(ds) for ds in datasets) / batch_size)
    total = 0
    for ds in datasets:
        samples = len(ds) if training else ds.num_eval_samples()
        total += math.ceil(samples / batch_size)
    return total


def iterate_batches(
    datasets: Sequence[Dataset],
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    epoch: int = 0,
    augment: bool = True,
    spectral_jitter: float = 0.0,
    mix: bool = False,
    atmosphere: float = 0.0,
) -> Iterator[Batch]:
    """Yield (x, y) batches: x = {"image": (B,H,W,10)}, y = {"hse": (B,H/2,W/2,1), "lcz": (B,H,W,17)}, float32.

    Each batch comes from one Dataset; the last, partial batch of each is kept.

    training=True: a fresh order per (seed, epoch): patch files are permuted, scenes get random windows
    (redrawn when mostly nodata or without reference); batches of the datasets are interleaved in a seeded
    random order; with `augment`, each sample gets one of the 8 flips/rotations (image and labels together),
    with spectral_jitter > 0 the image is multiplied per band by N(1, spectral_jitter), and with atmosphere > 0
    it gets another atmosphere of that strength (core.data.augment.atmosphere). The same seed and epoch give
    identical batches.
    With mix=True (training, all datasets of one patch size) the samples of every dataset are shuffled
    together and each batch mixes them: a dataset contributes in proportion to len(dataset), i.e. to its area
    for scenes and patch files of the same patch size.
    training=False: every patch / tile once, datasets in the given order, no augmentation.
    """
    _check_args(datasets, batch_size)
    seed, epoch = _check_seed(seed, "seed"), _check_seed(epoch, "epoch")
    if not (isinstance(spectral_jitter, (int, float)) and spectral_jitter >= 0):
        raise UrbanMTLError(f"spectral_jitter must be a number >= 0, got {spectral_jitter!r}. Use e.g. 0.03.")
    rng = np.random.default_rng((seed, epoch)) if training else None
    # One generator per dataset: its windows and augmentations do not depend on the other datasets.
    rngs = [np.random.default_rng((seed, epoch, i)) if training else None for i in range(len(datasets))]
    plans = [ds._plan(training, r) for ds, r in zip(datasets, rngs)]
    if training and mix and can_mix(datasets):
        assert rng is not None
        yield from _mixed_batches(datasets, plans, rngs, rng, batch_size, augment, float(spectral_jitter),
                                  float(atmosphere))
        return
    batches = [[plan[i: i + batch_size] for i in range(0, len(plan), batch_size)] for plan in plans]
    if training:
        assert rng is not None
        owners = np.concatenate([np.full(len(b), i, dtype=np.int64) for i, b in enumerate(batches)])
        order = rng.permutation(owners)
    else:
        order = np.concatenate([np.full(len(b), i, dtype=np.int64) for i, b in enumerate(batches)])
    position = [0] * len(datasets)
    for owner in order:
        owner = int(owner)
        units = batches[owner][position[owner]]
        position[owner] += 1
        ds, ds_rng = datasets[owner], rngs[owner]
        image, hse, lcz = ds.read_units(units, training, ds_rng)
        if training:
            assert ds_rng is not None
            image = _augmented(image, hse, lcz, ds_rng, augment, float(spectral_jitter), float(atmosphere))
        yield {"image": image}, {"hse": hse, "lcz": lcz}


def tf_dataset(
    datasets: Sequence[Dataset],
    batch_size: int,
    *,
    training: bool,
    seed: int,
    epoch_fn: Callable[[], int],
    augment: bool = True,
    spectral_jitter: float = 0.0,
) -> "tf.data.Dataset":
    """A tf.data.Dataset over `iterate_batches`, prefetching 2 batches.

    `epoch_fn()` is called each time an iteration starts (Keras re-iterates once per epoch), so every epoch
    gets its own order. Element structure: ({"image": (None,None,None,10)}, {"hse": (None,None,None,1),
    "lcz": (None,None,None,17)}) float32.
    """
    _check_args(datasets, batch_size)
    datasets = list(datasets)

    def generate() -> Iterator[Batch]:
        yield from iterate_batches(datasets, batch_size, training=training, seed=seed, epoch=int(epoch_fn()),
                                   augment=augment, spectral_jitter=spectral_jitter)

    return generator_dataset(generate)


def generator_dataset(make_iter: Callable[[], Iterator[Batch]], bands: int = NUM_BANDS) -> "tf.data.Dataset":
    """A tf.data.Dataset over the batches `make_iter()` yields ((image, hse, lcz) as above), prefetching 2."""
    import tensorflow as tf

    signature = (
        {"image": tf.TensorSpec((None, None, None, bands), tf.float32)},
        {"hse": tf.TensorSpec((None, None, None, 1), tf.float32),
         "lcz": tf.TensorSpec((None, None, None, NUM_CLASSES), tf.float32)},
    )
    return tf.data.Dataset.from_generator(make_iter, output_signature=signature).prefetch(2)


def _mixed_batches(datasets: Sequence[Dataset], plans: list[list], rngs: list, rng: np.random.Generator,
                   batch_size: int, augment: bool, spectral_jitter: float, atmosphere: float = 0.0
                   ) -> Iterator[Batch]:
    """Training batches drawn from the shuffled union of every dataset's plan (see iterate_batches, mix)."""
    units = [(owner, unit) for owner, plan in enumerate(plans) for unit in plan]
    order = rng.permutation(len(units))
    for start in range(0, len(units), batch_size):
        chosen = [units[int(k)] for k in order[start: start + batch_size]]
        parts: list[tuple[np.ndarray, ...]] = [()] * len(chosen)
        for owner in sorted({o for o, _ in chosen}):
            slots = [i for i, (o, _) in enumerate(chosen) if o == owner]
            image, hse, lcz = datasets[owner].read_units([chosen[i][1] for i in slots], True, rngs[owner])
            for j, slot in enumerate(slots):
                parts[slot] = (image[j], hse[j], lcz[j])
        image = np.stack([p[0] for p in parts])
        hse = np.stack([p[1] for p in parts])
        lcz = np.stack([p[2] for p in parts])
        image = _augmented(image, hse, lcz, rng, augment, spectral_jitter, atmosphere)
        yield {"image": image}, {"hse": hse, "lcz": lcz}


def _augmented(image: np.ndarray, hse: np.ndarray, lcz: np.ndarray, rng: np.random.Generator, augment: bool,
               spectral_jitter: float, atmosphere: float) -> np.ndarray:
    """A training batch augmented: a flip/rotation per sample (labels transformed in place with it), then the
    spectral jitter and the atmosphere on the image; returns the image."""
    if augment:
        ks = rng.integers(0, NUM_TRANSFORMS, size=image.shape[0])
        for i, k in enumerate(ks):
            image[i], hse[i], lcz[i] = augment_sample(image[i], hse[i], lcz[i], int(k))
    if spectral_jitter > 0:
        image = apply_jitter(image, spectral_jitter, rng)
    if atmosphere > 0:
        image = apply_atmosphere(image, atmosphere, rng)
    return image
