"""Writing a run's outputs: every output path checked before any work (plan), the names locked against a second
run (lock), the rasters written, verified and renamed into place together (writer, with their temporaries and
write errors), the per-class statistics (class_stats) and the LCZ exports for climate models (export)."""

from .class_stats import ClassStats, write_stats_csv
from .export import check_exports, export_lcz
from .lock import OutputLock
from .plan import OutputPlan, check_outputs_apart, plan_outputs
from .temporaries import remove_stale_temporaries, remove_temporaries
from .writer import GridSpec, OutputSet

__all__ = ["ClassStats", "GridSpec", "OutputLock", "OutputPlan", "OutputSet", "check_exports", "check_outputs_apart",
           "export_lcz", "plan_outputs", "remove_stale_temporaries", "remove_temporaries", "write_stats_csv"]
