"""A trained model on disk, without Keras or TensorFlow: which files make it (the Keras model, its card, its LiteRT
export), where the bundled one lives, and the card read as JSON. The mapping process on LiteRT needs nothing more;
loading the Keras network itself is core.network.saving.

A model folder holds:
- MODEL_FILE (model.keras): the network as it trains, the source of everything else;
- CARD_FILE (model_card.json): what it is (config, bands, outputs, training) and, under "litert", its export;
- LITERT_FILE (model.tflite): the mapping-time network (windowed attention of card["litert"]["attention_window"]
  20 m pixels) for LiteRT with a dynamic input shape, and fixed_litert_name(shape) files of the same network for the
  engine's default tile (model_1x512x512.tflite), written by core.network.export (python -m core.export_litert).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..common.errors import UrbanMTLError

#: Where the bundled model lives (repository root = plugin folder).
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
MODEL_FILE = "model.keras"
CARD_FILE = "model_card.json"
LITERT_FILE = "model.tflite"
DEFAULT_MODEL_PATH = MODELS_DIR / MODEL_FILE
#: The card's entry for the LiteRT export: {"file": LITERT_FILE, "attention_window": n or None, "fixed": [{"file":
#: name, "shape": [B, H, W, 10]}], ...} (core.network.export.export_entry).
LITERT_KEY = "litert"


def card_path_for(model_path: Path) -> Path:
    return Path(model_path).with_name(CARD_FILE)


def fixed_litert_name(shape: tuple[int, ...]) -> str:
    """The name of a LiteRT export of fixed input shape (B, H, W, bands): model_BxHxW.tflite."""
    return f"model_{'x'.join(str(n) for n in shape[:3])}.tflite"


def resolve_model_path(path: Optional[str | os.PathLike]) -> Path:
    """The .keras file meant by `path`: a file, a training run folder (its model.keras), or None for the
    bundled model. A model.tflite given instead names the model.keras beside it (the card is the same)."""
    if path is None or str(path) == "":
        if not DEFAULT_MODEL_PATH.exists():
            raise UrbanMTLError(
                f"No model was given and the bundled model {DEFAULT_MODEL_PATH} is missing. Pass a model "
                f"trained with 'python -m core.train' (its run folder or model.keras), or reinstall the plugin."
            )
        return DEFAULT_MODEL_PATH
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / MODEL_FILE
    elif path.suffix == ".tflite":
        path = path.with_name(MODEL_FILE)
    if not path.exists():
        raise UrbanMTLError(
            f"Model file '{path}' does not exist. Give a .keras file or a training run folder from "
            f"'python -m core.train'."
        )
    return path


def read_card(model_path: Path) -> dict[str, Any]:
    """The card beside `model_path` as a dict ({} when there is none); one sentence for a card that is not JSON."""
    card_file = card_path_for(model_path)
    if not card_file.exists():
        return {}
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UrbanMTLError(f"The model card '{card_file}' is not valid JSON ({exc}). Restore it from the training "
                            f"run folder.") from None
    return card if isinstance(card, dict) else {}


@dataclass(frozen=True)
class LiteRTExport:
    """A model's LiteRT export: the file with a dynamic input shape (any batch and tile), the files of fixed input
    shapes (B, H, W, 10) -> path (the converter folds their shape arithmetic: faster per tile, see
    core.network.export), and the attention window (20 m pixels; None: over each tile) they map with."""

    dynamic: Path
    fixed: dict[tuple[int, ...], Path]
    window: Optional[int]


def litert_export(model_path: Path, card: dict[str, Any]) -> Optional[LiteRTExport]:
    """The LiteRT export of a model, or None when it has none its card vouches for: the card's "litert" entry must
    name the files and give the attention window, and the files must exist beside the model."""
    entry = card.get(LITERT_KEY) if isinstance(card, dict) else None
    if not isinstance(entry, dict) or "attention_window" not in entry:
        return None
    window = entry["attention_window"]
    folder = Path(model_path).parent
    dynamic = folder / str(entry.get("file") or LITERT_FILE)
    fixed = {}
    for item in entry.get("fixed") or []:
        if isinstance(item, dict) and (folder / str(item.get("file"))).exists():
            fixed[tuple(int(n) for n in item.get("shape", ()))] = folder / str(item["file"])
    if not dynamic.exists() or not (window is None or isinstance(window, int)):
        return None
    return LiteRTExport(dynamic, fixed, window)
