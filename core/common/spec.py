"""The model's input/output contract and the engine's defaults, stated once: no TensorFlow, no Keras, no GDAL.

Every module that needs one of these facts reads it from here, so the QGIS process (ui/, plugin.py) and the
light engine modules (core.tiling) can use them without loading TensorFlow. `check_card` compares a loaded
model's card with this contract and refuses, in one message, a model the engine cannot honour.

Input: MODEL_BANDS, in this order, on a 10 m grid, reflectance = (DN + offset) / DN_SCALE (the offset rule
lives in core.common.bands / core.inputs.metadata; its values are here). Outputs: HSE density at 20 m (OUTPUT_FACTOR
input pixels per axis) and LCZ probabilities at 20 m, mapped to 100 m cells of CELL x CELL 20 m pixels.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any, Optional

from .errors import UrbanMTLError

# --- input ---

#: The 10 bands the network reads, in this order, all on the 10 m grid (So2Sat LCZ42 / Qiu et al. order).
MODEL_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
#: Ground sampling distance of the network's input, in metres.
INPUT_GSD_M = 10
#: DN scale of Sentinel-2 L1C/L2A products: reflectance = (DN + offset) / DN_SCALE.
DN_SCALE = 10000
#: DN offset of products of processing baseline OFFSET_BASELINE and later (0 before); the rule is applied in
#: core.common.bands.offset_for_baseline and core.inputs.metadata.
BASELINE_OFFSET = -1000
OFFSET_BASELINE = "04.00"
#: Input nodata rule: a 10 m pixel is nodata when it holds the file's nodata value or 0 in every band. A 20 m
#: pixel or 100 m cell is valid when at least VALID_SHARE of its 10 m input pixels inside the scene are valid.
VALID_SHARE = 0.5

# --- outputs ---

#: 20 m output pixels: input pixels per output pixel, per axis (the network halves the grid once).
OUTPUT_FACTOR = 2
HSE_GSD_M = INPUT_GSD_M * OUTPUT_FACTOR            # 20
#: The network's LCZ probabilities come at 20 m too; the map averages them over 100 m cells.
LCZ_PROB_GSD_M = HSE_GSD_M                         # 20
#: 20 m pixels per 100 m LCZ cell, per axis.
CELL = 5
LCZ_GSD_M = HSE_GSD_M * CELL                       # 100
#: LCZ classes 1..17 (1-10 built types, A-G land cover); probability channel k-1 = LCZ k.
NUM_CLASSES = 17
#: Output names of a mapping run, and the file endings its rasters may have (GeoTIFF only).
OUTPUT_NAMES: tuple[str, ...] = ("hse", "lcz", "confidence", "stats")
RASTER_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
STATS_SUFFIX = ".csv"
#: Beside each output while a run writes it: '.<name>' + LOCK_SUFFIX (core.outputs.lock; ui.engine cleans up).
LOCK_SUFFIX = ".urbanmtl-lock"
#: While a run writes an output `<stem><suffix>` it writes the hidden temporary '.<stem>.<TEMPORARY_HEX_DIGITS
#: hex digits>' + TEMPORARY_MARK + '<suffix>' beside it (a COG conversion adds '.cog' before the suffix; GDAL may
#: keep '.aux.xml' beside either). core.outputs.temporaries names and cleans them; ui.engine cleans up after a killed run.
TEMPORARY_MARK = ".tmp"
TEMPORARY_HEX_DIGITS = 8
#: Nodata of the outputs: HSE and confidence (float32) and LCZ codes (uint8).
FLOAT_NODATA = -1.0
LCZ_NODATA = 0
#: Majority filter sizes of the LCZ exports, in 100 m cells (0 = off).
MAJORITY_SIZES: tuple[int, ...] = (0, 3, 5)

# --- tiling and running ---

#: Input height and width must be multiples of this (three 2x2 poolings).
SIZE_MULTIPLE = 8
#: Smallest tile edge accepted: two 80 m cells of the LCZ branch.
MIN_TILE_SIZE = 2 * SIZE_MULTIPLE
#: Tiling of a model whose card does not say the size of its training windows (core.tiling.model_tiling).
DEFAULT_TILE_SIZE = 256
#: How the attention pools when mapping (core.mapping.predict.PredictOptions.attention): over the training window
#: around each pixel (window, the default) or over each tile (tile, as the network trained).
ATTENTIONS = ("window", "tile")
DEFAULT_OVERLAP = 32
#: The blending scheme of this project, and the authors' four-offset scheme (docs/method.md, "Inference").
SCHEMES: tuple[str, ...] = ("blend", "authors")
#: Where the network runs.
DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")
#: What runs the network (core.network.runtime): auto (LiteRT on the CPU where the model has a LiteRT export and the
#: package is installed, else TensorFlow), LiteRT (ai-edge-litert, XNNPACK) or TensorFlow.
RUNTIMES: tuple[str, ...] = ("auto", "litert", "tensorflow")
#: Tiles per network call when the caller does not say: as many as make this many input pixels, at least one
#: (one 512 px tile at the default tiling). A 512 x 512 px call peaks near 300 MB above the loaded network (2 CPU
#: cores, bench/bench_inference.py); 4 of them took the run past 1.4 GB.
BATCH_PIXELS = 512 * 512


# --- fine-tuning on training areas (core.finetuning; the QGIS dialog's limits and defaults) ---

#: The epochs a fine-tuning run may be given (None/0: automatic, core.finetuning.setup.auto_epochs).
MIN_EPOCHS, MAX_EPOCHS = 5, 200
#: Weight of the distillation loss that keeps the start model's own map away from the training areas.
DEFAULT_DISTILL = 1.0


def default_batch_size(tile_size: int) -> int:
    """Tiles per network call for tiles of tile_size x tile_size px (BATCH_PIXELS)."""
    return max(1, BATCH_PIXELS // (tile_size * tile_size))


def temporary_pattern(final: PurePath) -> re.Pattern[str]:
    """Every name of a temporary of output `final` (see TEMPORARY_MARK): the file, its COG copy, their .aux.xml."""
    return re.compile(rf"^\.{re.escape(final.stem)}\.[0-9a-f]{{{TEMPORARY_HEX_DIGITS}}}{re.escape(TEMPORARY_MARK)}"
                      rf"(?:\.cog)?{re.escape(final.suffix)}(?:\.aux\.xml)?$")


# --- the model card against the contract ---

_SCALE_RE = re.compile(r"/\s*([0-9][0-9_.eE+]*)\s*$")


def card_scale(card: dict) -> Optional[float]:
    """The DN scale a card states (scaling.scale, or the divisor of scaling.reflectance "(DN + offset) / 10000");
    None when it states none."""
    scaling = card.get("scaling")
    if not isinstance(scaling, dict):
        return None
    if isinstance(scaling.get("scale"), (int, float)):
        return float(scaling["scale"])
    text = scaling.get("reflectance")
    match = _SCALE_RE.search(text) if isinstance(text, str) else None
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None


def _band_problem(bands: Any) -> Optional[str]:
    if bands is None:
        return None
    bands = [str(b) for b in bands] if isinstance(bands, (list, tuple)) else [str(bands)]
    if bands == list(MODEL_BANDS):
        return None
    missing = [b for b in MODEL_BANDS if b not in bands]
    extra = [b for b in bands if b not in MODEL_BANDS]
    if missing or extra:
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"has {', '.join(extra)}"] if extra else [])
        detail = " and ".join(parts)
    else:
        detail = "has them in another order"
    return (f"bands {', '.join(bands)} (compared with urbanmtl's {len(MODEL_BANDS)} bands "
            f"{', '.join(MODEL_BANDS)}, it {detail}); the model needs a retrain with urbanmtl's {len(MODEL_BANDS)} "
            f"bands ('python -m core.train')")


def _differs(value: Any, expected: float) -> bool:
    return value is not None and not (isinstance(value, (int, float)) and float(value) == float(expected))


def card_problems(card: Any) -> list[str]:
    """What a model card states that the engine cannot honour (empty: nothing). Keys a card leaves out (older
    models, test models) are taken as the contract's values."""
    if not isinstance(card, dict):
        return []
    problems = []
    band_problem = _band_problem(card.get("bands"))
    if band_problem:
        problems.append(band_problem)
    scale = card_scale(card)
    if scale is not None and scale != DN_SCALE:
        problems.append(f"reflectance scale (DN + offset) / {scale:g}, where urbanmtl feeds (DN + offset) / "
                        f"{DN_SCALE}")
    if _differs(card.get("input_gsd_m"), INPUT_GSD_M):
        problems.append(f"input GSD {card['input_gsd_m']} m, where urbanmtl feeds a {INPUT_GSD_M} m grid")
    outputs = card.get("outputs") if isinstance(card.get("outputs"), dict) else {}
    for task, key, expected in (("hse", "gsd_m", HSE_GSD_M), ("lcz", "gsd_m", LCZ_PROB_GSD_M),
                                ("lcz", "map_gsd_m", LCZ_GSD_M), ("lcz", "classes", NUM_CLASSES)):
        entry = outputs.get(task) if isinstance(outputs.get(task), dict) else {}
        if _differs(entry.get(key), expected):
            what = "LCZ classes" if key == "classes" else f"{task.upper()} output grid"
            unit = "" if key == "classes" else " m"
            problems.append(f"{what} {key}={entry[key]}{unit}, where urbanmtl writes {expected}{unit}")
    if _differs(card.get("size_multiple"), SIZE_MULTIPLE):
        problems.append(f"size_multiple {card['size_multiple']}, where urbanmtl tiles in multiples of "
                        f"{SIZE_MULTIPLE} pixels")
    return problems


def check_card(card: Any, model: str = "The model") -> None:
    """Raise UrbanMTLError, one message naming every problem, when `card` states an input or output the engine
    cannot honour: bands other than MODEL_BANDS, a DN scale other than DN_SCALE, an input GSD other than 10 m,
    output grids other than 20 m / 100 m, a size multiple other than 8. A card without those keys passes."""
    problems = card_problems(card)
    if problems:
        raise UrbanMTLError(
            f"{model} cannot be used by urbanmtl: its card (model_card.json) states " + "; ".join(problems)
            + ". urbanmtl maps with its fixed contract (core/spec.py): use the bundled model or one trained "
            "with 'python -m core.train'."
        )
