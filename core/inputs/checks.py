"""What the values of an input raster are: Sentinel-2 DN, reflectance 0..1, reflectance in percent, or none of these.

The one place that decides how the pixels of an input become reflectance, from its data type and a sample of its
valid values (core.inputs.scene.open_scene passes the decimated look at the whole scene, so inference and training
decide alike). Pure numpy: nothing here opens files or imports TensorFlow.

    scale = assess_value_scale(dtype, sample, valid, name="'scene.tif'")
    reflectance = (value + offset * scale.use_offset) / scale.divisor

Decisions, on the valid pixels of the 10 model bands, first match wins:

- 8-bit integers (uint8/int8): refused, an 8-bit display rendering (a colour-stretched export), not data;
- float with a median <= 1.5: reflectance 0..1, used as it is;
- whole numbers all within 0..255, or floats within 0..255 with a median > 100 or a 99th percentile > 200:
  refused as 8-bit display values too;
- float with a median <= 100 and a 99th percentile <= 200: reflectance in percent, divided by 100;
- anything else: Sentinel-2 DN, (DN + offset) / 10000.

An explicit DN offset means the user says the values are DN: they are read as DN (no percent guess), except
8-bit display values (refused all the same) and reflectance 0..1 (used as it is with an offset of 0, refused with
any other offset: subtracting 1000 from reflectance makes nonsense). Offsets must be finite and of plausible size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from ..common import spec
from ..common.errors import InputError, UrbanMTLError

#: DN scale of Sentinel-2 products (core.common.spec.DN_SCALE, as a float, like core.common.bands.QUANTIFICATION_VALUE).
DN_SCALE = float(spec.DN_SCALE)
#: A float raster whose median valid value is at most this holds reflectance 0..1 already, not DN.
REFLECTANCE_MEDIAN_LIMIT = 1.5
#: A float raster with a median up to this (and a 99th percentile up to PERCENT_P99_LIMIT) holds reflectance in
#: percent: 0..100, above 100 only over clouds and snow. Sentinel-2 DN of land are 10 to 100 times larger.
PERCENT_MEDIAN_LIMIT = 100.0
PERCENT_P99_LIMIT = 200.0
#: The largest 8-bit value: rasters whose valid values all fit in 0..255 are display renderings, not DN.
DISPLAY_MAX = 255.0
#: The largest DN offset accepted (Sentinel-2 uses 0 or -1000).
OFFSET_LIMIT = 10000.0

DISPLAY_MESSAGE = "values look like 8-bit display values, not Sentinel-2 DN or reflectance"

DtypeLike = Union[str, np.dtype, type]


@dataclass(frozen=True)
class ValueScale:
    """How the values of an input become reflectance: reflectance = (value + offset if use_offset) / divisor.

    kind: "dn", "reflectance", "percent", or "unknown" (no valid value in the sample: treated as DN).
    message: what to tell the user (None for plain DN, which needs no comment).
    """

    kind: str
    divisor: float
    use_offset: bool
    median: float
    p99: float
    maximum: float
    message: Optional[str] = None

    def describe(self) -> str:
        return f"median {self.median:.4g}, 99th percentile {self.p99:.4g}, maximum {self.maximum:.4g}"


def assess_value_scale(dtype: Union[DtypeLike, Sequence[DtypeLike]], values: np.ndarray,
                       valid: Optional[np.ndarray] = None, *, name: str = "the input",
                       explicit_offset: Union[None, bool, float] = None) -> ValueScale:
    """Decide what the values of an input are (see the module docstring); raise InputError when unusable.

    dtype: the raster's data type (or one per band: the widest is used). values: raw values (bands, ...) of a
    sample of the raster, e.g. a decimated read of the model bands; valid: a mask over values' trailing axes
    (pixels), None = every pixel whose values are all finite. explicit_offset: the DN offset the user gave (None:
    none; True: one was given): the user says the values are DN. Values that look like reflectance 0..1 are still
    used as reflectance with an offset of 0 (it changes nothing), and refused with any other offset.
    """
    dt = _widest(dtype)
    values = np.asarray(values)
    if valid is not None:
        sample = values[:, np.asarray(valid, bool)] if values.ndim > 1 else values[np.asarray(valid, bool)]
    else:
        sample = values
    sample = np.asarray(sample, dtype=np.float64).ravel()
    sample = sample[np.isfinite(sample)]
    is_int = np.issubdtype(dt, np.integer) or dt == np.bool_
    if is_int and dt.itemsize == 1:
        raise InputError(_display_message(name, dt, sample, "8-bit data type"))
    if sample.size == 0:
        return ValueScale("unknown", DN_SCALE, True, math.nan, math.nan, math.nan)
    median = float(np.median(sample))
    p99 = float(np.percentile(sample, 99))
    maximum = float(sample.max())
    minimum = float(sample.min())

    def scale(kind: str, divisor: float, use_offset: bool, message: Optional[str] = None) -> ValueScale:
        return ValueScale(kind, divisor, use_offset, median, p99, maximum, message)

    integral = is_int or bool(np.all(sample == np.round(sample)))
    if not is_int and median <= REFLECTANCE_MEDIAN_LIMIT:
        if explicit_offset is not None and explicit_offset is not False and explicit_offset != 0:
            raise InputError(
                f"A DN offset ({_fmt(explicit_offset)}) was given for {name}, but its values look like reflectance "
                f"0..1, not DN ({scale('', 1, False).describe()}); reflectance takes no DN offset. Leave the "
                f"offset out."
            )
        return scale("reflectance", 1.0, False,
                     f"{name}: the values look like reflectance already (median {median:.3f}); they are used as "
                     f"they are, not divided by 10000.")
    if minimum >= 0 and maximum <= DISPLAY_MAX and (integral or p99 > PERCENT_P99_LIMIT
                                                    or median > PERCENT_MEDIAN_LIMIT):
        raise InputError(_display_message(name, dt, sample, "all valid values within 0..255"))
    if explicit_offset is not None and explicit_offset is not False:
        return scale("dn", DN_SCALE, True)
    if not is_int and median <= PERCENT_MEDIAN_LIMIT and p99 <= PERCENT_P99_LIMIT:
        return scale("percent", 100.0, False,
                     f"{name}: the values look like reflectance in percent ({scale('', 1, False).describe()}); "
                     f"they are divided by 100. If they are DN, give the DN offset explicitly (e.g. 0) and they "
                     f"are read as DN.")
    return scale("dn", DN_SCALE, True)


def check_offset(offset: Optional[float], what: str = "The DN offset") -> Optional[float]:
    """The offset as a float when it is a finite number of plausible size (|offset| <= 10000); else UrbanMTLError."""
    if offset is None:
        return None
    try:
        value = float(offset)
    except (TypeError, ValueError):
        raise UrbanMTLError(f"{what} must be a number such as -1000 or 0; got {offset!r}.") from None
    if not math.isfinite(value) or abs(value) > OFFSET_LIMIT:
        raise UrbanMTLError(
            f"{what} must be a finite number between {-OFFSET_LIMIT:g} and {OFFSET_LIMIT:g} (Sentinel-2 uses "
            f"-1000 from processing baseline 04.00 on, 0 before); got {offset!r}. Give a number such as -1000 or 0, "
            f"or leave it out to use the product's metadata."
        )
    return value


def check_offsets(offsets: np.ndarray, source: str) -> np.ndarray:
    """Offsets read from metadata: all finite and of plausible size, else InputError naming where they came from."""
    offsets = np.asarray(offsets, dtype=np.float32)
    if not np.all(np.isfinite(offsets)) or np.any(np.abs(offsets) > OFFSET_LIMIT):
        raise InputError(
            f"The DN offsets of {source} are not usable ({', '.join(f'{v:g}' for v in offsets)}). Give the offset "
            f"explicitly (--offset -1000 from processing baseline 04.00 on, 0 before)."
        )
    return offsets


def _widest(dtype: Union[DtypeLike, Sequence[DtypeLike]]) -> np.dtype:
    if isinstance(dtype, (list, tuple)):
        dtypes = [np.dtype(d) for d in dtype]
        if not dtypes:
            raise ValueError("no data type given")
        return np.result_type(*dtypes)
    return np.dtype(dtype)


def _fmt(offset: Union[bool, float]) -> str:
    return "given" if offset is True else f"{float(offset):g}"


def _display_message(name: str, dtype: np.dtype, sample: np.ndarray, why: str) -> str:
    stats = ""
    if sample.size:
        stats = f", median {float(np.median(sample)):.4g}, maximum {float(sample.max()):.4g}"
    return (
        f"The {DISPLAY_MESSAGE}: {name} ({dtype.name}, {why}{stats}). An 8-bit rendering (a colour-stretched "
        f"export or screenshot) has lost the radiometry the network needs. Use the original bands: a Sentinel-2 "
        f"SAFE product or its JP2 band files, a stack of their DN (uint16, typically 0..10000 and more), or "
        f"reflectance 0..1 as float."
    )
