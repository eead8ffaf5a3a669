"""An input opened on its own grid (OpenedInput): what every reader of core.inputs fills in before the scene is
warped and windowed (core.inputs.scene)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass
class OpenedInput:
    """An input opened on its own grid, before warping and windowing."""

    dataset: Any
    indexes: list[int]
    name: str
    offsets: Optional[np.ndarray] = None       # per model band, when the metadata gives them
    offset_source: str = ""
    baseline: Optional[str] = None
    baseline_source: str = ""
    messages: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)   # every file the input reads
