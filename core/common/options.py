"""The options of a mapping run, stated once (no TensorFlow, no GDAL): the engine (core.mapping.predict), its command
lines (core.predict, core.batch), the QGIS engine process (core.worker) and Dask tasks (core.cluster) all take
PredictOptions, and OPTION_FIELDS, the keys a parameter file or a task may set, come from its fields."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from .spec import ATTENTIONS, DEVICES, RUNTIMES, SCHEMES


@dataclass
class PredictOptions:
    """How to run a prediction. Sizes in 10 m input pixels."""

    bands: Optional[list[str]] = None          # one name per input band, file order
    extent: Optional[tuple[float, float, float, float]] = None   # xmin, ymin, xmax, ymax
    extent_crs: Optional[str] = None           # WKT/EPSG of extent; None = the input's CRS
    tile_size: Optional[int] = None            # pixels at 10 m, multiple of 8; None: the model's (model_tiling)
    overlap: Optional[int] = None              # pixels on each side shared with neighbours; None: the model's
    batch_size: Optional[int] = None           # tiles per network call; None: core.common.spec.default_batch_size
    device: str = DEVICES[0]                   # auto | cpu | gpu (core.common.spec.DEVICES)
    overwrite: bool = False
    cog: bool = False
    scheme: str = SCHEMES[0]                   # blend | authors (core.common.spec.SCHEMES)
    attention: str = ATTENTIONS[0]             # window: pool over the training window around each pixel (the
                                               # same map whatever the tile size); tile: over each tile
    offset: Optional[float] = None             # DN offset to use instead of the metadata's (e.g. -1000)
    runtime: str = RUNTIMES[0]                 # auto | litert | tensorflow (core.network.runtime.choose_runtime)


#: The PredictOptions fields, in order: the keys a parameter file (core.worker) or a Dask task may set.
OPTION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PredictOptions))
