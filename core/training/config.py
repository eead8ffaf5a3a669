"""Training configuration: the paper's defaults, overridable from a YAML/JSON file and from flags."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from ..common.errors import UrbanMTLError


@dataclass
class TrainConfig:
    """Every setting of a training run. Defaults are the paper's (docs/method.md, "Losses and training")."""

    data: list[str] = field(default_factory=list)
    val_data: list[str] = field(default_factory=list)
    val_fraction: float = 0.2          # used when no val_data is given: split by patch or by area
    split_seed: int = 0                # seed of that split (kept apart from `seed`: runs of several seeds
                                       # validate on the same patches and areas)
    val_scenes: list[str] = field(default_factory=list)  # scenes held out whole for validation: a scene's
                                       # name or its part before the first '_' (a city: 'rio' = rio_20171011).
                                       # With val_scenes, scenes of a manifest folder are never split by area.
    exclude_scenes: list[str] = field(default_factory=list)  # scenes left out of the run altogether (neither
                                       # trained nor validated on; named as val_scenes): leave-region-out
    mix_batches: bool = True           # batches mix samples of every dataset (same patch size needed)
    balance: str = "area"              # windows per epoch of the scenes of a folder of manifests (cities):
                                       # "area" = in proportion to each scene's area; "scene" = the same number
                                       # for every scene (their total unchanged); other datasets: by area
    init_from: str = ""                # fine-tune: start from this model's weights (model.keras or run folder);
                                       # the architecture (variant, widths) is then the start model's
    variant: str = "mtl_learned_p2f"
    base_width: int = 16
    in_bands: int = 10
    dropout: float = 0.1
    bn_momentum: float = 0.9           # BatchNorm moving-average momentum (see core.network.model.ModelConfig)
    patch_size: int = 128
    epochs: int = 100
    batch_size: int = 8
    learning_rate: float = 0.002       # Nesterov Adam
    lr_decay: float = 0.75             # multiply the learning rate by this ...
    lr_decay_every: int = 2            # ... every this many epochs
    patience: int = 10                 # early stopping on validation loss
    augment: bool = True               # the 8 flips/rotations
    spectral_jitter: float = 0.0       # sigma of a per-band multiplicative jitter (0 = off)
    rare_windows: float = 0.0          # share of the training windows of a scene with an LCZ raster centred on
                                       # a 40 m cell of a rare class (rare_classes; 0 = off)
    rare_classes: list[str] = field(default_factory=lambda: ["1", "4", "7", "10"])
    atmosphere: float = 0.0            # strength of a random change of atmosphere and illumination per window
                                       # (path radiance, haze, brightness, contrast; core.data.augment; 0 = off)
    ema: float = 0.0                   # momentum of a moving average of the weights (Polyak averaging), which
                                       # is what is validated, checkpointed as best and kept as the model
                                       # (0 = off; 0.998 averages about the last 500 steps)
    label_margin: int = 0              # 10 m pixels on each side of a training window that the network sees
                                       # but the losses leave out (even; 2 * margin < every window's size)
    freeze: str = "none"               # fine-tuning: "backbone" keeps blocks 1-4, the HSE head and every
                                       # BatchNorm at the start model's weights (only the LCZ branch learns;
                                       # the HSE map stays the start model's); "none" trains every layer
    distill: float = 0.0               # fine-tuning: weight of a loss pulling the LCZ output towards the start
                                       # model's where a window has no LCZ reference (0 = off)
    distill_map: str = ""              # JSON file of a 17 x 17 matrix (rows: start model's class, columns: the
                                       # class to learn) through which the start model's probabilities pass
                                       # before they are a distillation target ("": as they are)
    class_balance: float = 0.0         # windows around training polygons: 0 = every polygon alike, 1 = every
                                       # class alike, between: class c drawn in proportion to n_c ** (1 - x)
    background: float = 0.0            # share of the windows of a polygon scene drawn anywhere in it instead of
                                       # around the polygons (with distill: the start model is kept there)
    hse_threshold: float = 0.5         # built/not built for the binary HSE metrics
    seed: Optional[int] = None
    distribute: str = "none"           # none | mirrored | multiworker
    out: str = ""


def config_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML or JSON file (keys as in TrainConfig, '-' or '_'); unknown keys are an error."""
    path = Path(path)
    if not path.exists():
        raise UrbanMTLError(f"Config file '{path}' does not exist. Give the path of a YAML or JSON file.")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except Exception as exc:
        raise UrbanMTLError(f"Cannot parse config file '{path}': {exc}. Fix its syntax (YAML or JSON).") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UrbanMTLError(f"Config file '{path}' must hold a mapping of settings (key: value).")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - set(config_keys()))
    if unknown:
        raise UrbanMTLError(
            f"Config file '{path}' has unknown key(s): {', '.join(unknown)}. Valid keys: {', '.join(config_keys())}."
        )
    base = path.parent
    for key in ("data", "val_data"):
        if key in values:
            items = values[key] if isinstance(values[key], list) else [values[key]]
            values[key] = [_relative_to(base, str(v)) for v in items]
    return values


def _relative_to(base: Path, spec: str) -> str:
    """Resolve a dataset spec ("PATH" or "FORMAT:PATH") relative to the config file's folder."""
    fmt, sep, path = spec.partition(":") if ":" in spec and not Path(spec).exists() else ("", "", spec)
    if not sep:
        fmt, path = "", spec
    resolved = str(path if Path(path).is_absolute() else (base / path))
    return f"{fmt}:{resolved}" if sep else resolved


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a text value"}


def check_value(key: str, value: Any) -> Any:
    """`value` for TrainConfig field `key`, checked against the field's type (the same types the CLI flags
    parse to); UrbanMTLError naming the key, the expected kind and the value otherwise."""
    hint = {f.name: f.type for f in fields(TrainConfig)}[key]
    hint = str(hint).replace("typing.", "")
    optional = "Optional" in hint or "None" in hint
    if value is None and optional:
        return None
    if hint.startswith("list"):
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in items):
            raise UrbanMTLError(f"{key} must be a list of text values, got {value!r}.")
        return [str(v) for v in items]
    for kind in (bool, int, float, str):
        if kind.__name__ in hint:
            break
    ok = (isinstance(value, kind) and not (kind is int and isinstance(value, bool))) or \
        (kind is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise UrbanMTLError(f"{key} must be {_KINDS[kind]}, got {value!r}.")
    return float(value) if kind is float else value


def make_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """Defaults < config file < flags (flags given as None are not set); every value type-checked."""
    merged = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    merged = {k: check_value(k, v) if k in config_keys() else v for k, v in merged.items()}
    try:
        return TrainConfig(**merged)
    except TypeError as exc:
        raise UrbanMTLError(f"Invalid training settings: {exc}.") from None
