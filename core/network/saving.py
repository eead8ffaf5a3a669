"""A trained network on disk: the model file (.keras) and its card (model_card.json beside it) written together,
resolved (a file, a run folder, or the bundled model) and loaded with the checks the engine relies on."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import keras
import numpy as np

from ..common.atomic import atomic_write
from ..common.errors import UrbanMTLError
# The input/output contract (core.common.spec): bands, GSDs, scale, size multiple, classes.
from ..common.spec import (
    BASELINE_OFFSET, DN_SCALE, HSE_GSD_M, INPUT_GSD_M, LCZ_GSD_M, LCZ_PROB_GSD_M, MODEL_BANDS, NUM_CLASSES,
    OFFSET_BASELINE, SIZE_MULTIPLE,
)
from .export import litert_files
from .files import LITERT_KEY, card_path_for, read_card, resolve_model_path
from .model import ModelConfig, count_parameters

@dataclass
class LoadedModel:
    """An inference network with its model card (a dict read from model_card.json beside the file)."""

    network: keras.Model
    card: dict[str, Any]
    path: Path

    @property
    def has_hse(self) -> bool:
        return "hse" in self.network.output

    @property
    def has_lcz(self) -> bool:
        return "lcz" in self.network.output


def base_card(config: ModelConfig, network: keras.Model) -> dict[str, Any]:
    """The fields of a model card that follow from the network alone (training adds data and metrics)."""
    return {
        "format": "urbanmtl-model-card/1",
        "variant": config.variant,
        "config": config.to_dict(),
        "bands": list(MODEL_BANDS[: config.in_bands]) if config.in_bands == len(MODEL_BANDS) else None,
        "scaling": {"reflectance": f"(DN + offset) / {DN_SCALE}", "offset": f"from product metadata ({BASELINE_OFFSET} "
                    f"from processing baseline {OFFSET_BASELINE} on, else 0)", "normalisation": "none"},
        "input_gsd_m": INPUT_GSD_M,
        "size_multiple": SIZE_MULTIPLE,
        "outputs": {
            **({"hse": {"gsd_m": HSE_GSD_M, "range": [0.0, 1.0],
                        "meaning": "built-up/impervious fraction"}} if config.has_hse else {}),
            **({"lcz": {"gsd_m": LCZ_PROB_GSD_M, "map_gsd_m": LCZ_GSD_M, "classes": NUM_CLASSES,
                        "meaning": "LCZ probabilities, channel k-1 = LCZ k"}} if config.has_lcz else {}),
        },
        "parameters": count_parameters(network),
        "keras_version": keras.__version__,
    }


def save_model(network: keras.Model, path: str | os.PathLike, card: dict[str, Any], litert: bool = True) -> Path:
    """Write the inference network to `path` (.keras), its card to model_card.json beside it and, with litert, the
    mapping network's LiteRT export (core.network.export.litert_files; the card's "litert" entry names the files).

    All are written under temporary names and renamed, the card last, so a failure never leaves half a model
    nor a card that names a file from another model.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise UrbanMTLError(f"Model files are saved as .keras; got '{path}'. Use a name ending in .keras.")
    path.parent.mkdir(parents=True, exist_ok=True)
    card = {k: v for k, v in card.items() if k != LITERT_KEY}
    files: dict[str, bytes] = {}
    if litert:
        files, card[LITERT_KEY] = litert_files(network, card)
    stale = [p for p in path.parent.glob("model*.tflite") if p.name not in files]
    # The card is renamed last, the LiteRT files before the model (the innermost block ends first).
    with atomic_write(card_path_for(path)) as card_tmp, atomic_write(path, tmp=path.with_name(
            f".{path.stem}.tmp.keras")) as tmp:
        network.save(tmp)
        for name, data in files.items():
            with atomic_write(path.with_name(name)) as file_tmp:
                file_tmp.write_bytes(data)
        card_tmp.write_text(json.dumps(card, indent=2, default=_json_default) + "\n")
    for old in stale:      # the export of the model this one replaced
        old.unlink(missing_ok=True)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def load_model(path: Optional[str | os.PathLike] = None) -> LoadedModel:
    """Load an inference network and its card; checks that it is an urbanmtl network for 10-band input.

    Raises UrbanMTLError for a missing, corrupt or incompatible file.
    """
    path = resolve_model_path(path)
    try:
        network = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for bad files; the user needs one sentence.
        raise UrbanMTLError(
            f"Cannot load the model file '{path}': {type(exc).__name__}: {str(exc).splitlines()[0][:200]}. "
            f"It is corrupt or not a Keras 3 model saved by urbanmtl; retrain it with 'python -m core.train' "
            f"or use the bundled model."
        ) from None
    card = read_card(path)
    inputs = network.inputs
    outputs = network.output
    if len(inputs) != 1 or not isinstance(outputs, dict) or not ({"hse", "lcz"} & set(outputs)):
        raise UrbanMTLError(
            f"'{path}' is not an urbanmtl inference model (expected one image input and 'hse'/'lcz' outputs). "
            f"Use the model.keras written by 'python -m core.train'."
        )
    in_bands = inputs[0].shape[-1]
    bands = card.get("bands") or list(MODEL_BANDS)
    if in_bands != len(MODEL_BANDS) or len(bands) != in_bands:
        raise UrbanMTLError(
            f"The model '{path}' expects {in_bands} input bands, but urbanmtl feeds the {len(MODEL_BANDS)} "
            f"Sentinel-2 bands {', '.join(MODEL_BANDS)}. Train a model with in_bands=10."
        )
    return LoadedModel(network=network, card=card, path=path)
