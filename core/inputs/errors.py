"""Errors of an input that opens but cannot be read: the exceptions a damaged read raises, and the message for it."""

from __future__ import annotations

from rasterio.errors import RasterioIOError

from ..common.errors import InputError

try:  # GDAL errors rasterio raises as they are (not wrapped in RasterioIOError)
    from rasterio._err import CPLE_BaseError as _CPLE_BaseError
except ImportError:  # pragma: no cover - other rasterio versions
    _CPLE_BaseError = RasterioIOError
#: Exceptions a read of a damaged or incomplete input raises.
READ_ERRORS: tuple[type[BaseException], ...] = (RasterioIOError, _CPLE_BaseError)


def damaged_input_error(name: str, exc: BaseException) -> InputError:
    """The error for a read that failed inside an input that opened: a truncated or corrupt file, a VRT source
    gone missing. Names the input and GDAL's reason."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for prefix in ("Read or write failed. ", "Read failed. "):
        if reason.startswith(prefix):
            reason = reason[len(prefix):]
    return InputError(
        f"The input is damaged or incomplete: {name}, {reason[:300].rstrip('.')}. Copy or download it again (an "
        f"interrupted download or a full disk leaves a truncated file), or check it with 'gdalinfo -checksum'."
    )
