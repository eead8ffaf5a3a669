"""Reading a Sentinel-2 input as one 10-band scene on a 10 m grid: rasters and VRTs (rasters), SAFE products and
band files (products), DN offsets from metadata (metadata), the files an input reads (files), georeferencing and
warping to UTM (grid), what the values are (checks), invalid pixels filled by mirroring (fill), read errors
explained (errors). The one reader: open_scene, then Scene.read window by window."""

from .errors import READ_ERRORS, damaged_input_error
from .scene import InputSpec, Scene, open_scene

__all__ = ["READ_ERRORS", "InputSpec", "Scene", "damaged_input_error", "open_scene"]
