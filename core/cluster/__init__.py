"""Many scenes on a Dask cluster (python -m core.batch): which scenes the inputs name and the batch's bookkeeping
(scenes), the client that submits one task per scene (client), and the task a worker runs (tasks)."""

from .scenes import BatchError, SceneJob, collect_scenes

__all__ = ["BatchError", "SceneJob", "collect_scenes"]
