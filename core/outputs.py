"""Output files of a prediction (facade): the names core.predict, core.worker, the tests and tools import from here.

Each part lives in its own module:
- core.output_plan: every output path checked before any work (plan_outputs, check_outputs_apart).
- core.output_lock: the lock files that keep two runs off the same output names (OutputLock).
- core.output_writer: the checked, verified writer that renames all outputs into place together (OutputSet).
- core.temporaries: the temporaries' names and the process-wide registry (remove_temporaries).
- core.signals: stop signals deferred while outputs are renamed or native code runs (defer_signal).
- core.class_stats: per-class statistics and their CSV (ClassStats, write_stats_csv).
- core.write_errors: failed writes detected (GDAL's error state) and explained (full disk, file-size limit).
"""

from __future__ import annotations

from .class_stats import STATS_FIELDS, ClassStats, write_stats_csv
from .output_lock import LOCK_SUFFIX, OutputLock
from .output_plan import RASTER_SUFFIXES, OutputPlan, check_outputs_apart, plan_outputs
from .output_writer import (
    BLOCK_SIZE, FLOAT_NODATA, LCZ_NODATA, GridSpec, OutputSet, lcz_category_names, lcz_colormap,
)
from .signals import _critical_section, defer_signal, signals_deferred
from .temporaries import (
    forget_temporary, register_temporary, remove_stale_temporaries, remove_temporaries, temporary_name,
)

__all__ = [
    "BLOCK_SIZE", "FLOAT_NODATA", "LCZ_NODATA", "LOCK_SUFFIX", "RASTER_SUFFIXES", "STATS_FIELDS", "ClassStats",
    "GridSpec", "OutputLock", "OutputPlan", "OutputSet", "_critical_section", "check_outputs_apart",
    "defer_signal", "forget_temporary", "lcz_category_names", "lcz_colormap", "plan_outputs",
    "register_temporary", "remove_stale_temporaries", "remove_temporaries", "signals_deferred",
    "temporary_name", "write_stats_csv",
]
