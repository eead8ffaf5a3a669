"""The reference layers a scene brings onto its grid one window at a time: one place to import them from.

HSE and LCZ rasters are warped window by window (core.data.reference_rasters, which also says what counts as
a reference value); LCZ training-area polygons are read once and burnt into each window
(core.data.reference_polygons); core.data.scene_references opens a manifest's references for its scene.
"""

from __future__ import annotations

from .reference_polygons import PolygonReference, as_mapping, enable_kml, parse_lcz_value
from .reference_rasters import (
    CHECK_SIDE_PX,
    LATTICE_PX,
    MARGIN_PX,
    Bounds,
    Prepare,
    RasterReference,
    codes_prepare,
    hse_prepare,
    open_raster,
    probabilities_prepare,
)

# The names core.training_areas imports from here.
_enable_kml = enable_kml
_as_mapping = as_mapping

__all__ = [
    "Bounds", "CHECK_SIDE_PX", "LATTICE_PX", "MARGIN_PX", "PolygonReference", "Prepare", "RasterReference",
    "codes_prepare", "hse_prepare", "open_raster", "parse_lcz_value", "probabilities_prepare",
]
