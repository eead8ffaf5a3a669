"""One scene's task on a Dask worker: the scene claimed, mapped by predict_scene with the worker's networks (the model
loaded once per process, not once per scene; it never travels with the tasks: workers read the model, the inputs
and the output folder from storage that they and the client share), released; a failure comes back as a row."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ..common.errors import UrbanMTLError
from ..common.options import PredictOptions
from ..mapping.networks import Networks
from ..mapping.predict import predict_scene
from ..network.files import resolve_model_path
from ..network.runtime import TENSORFLOW
from .scenes import SceneJob, claim_scene, failure_message, output_km2, release_scene, worker_name


def _configure_threads() -> None:
    """Apply TF_NUM_INTRAOP_THREADS through tf.config too, when TensorFlow has not started yet (on the TensorFlow
    runtime only: LiteRT reads the variable itself, core.network.litert.cpu_threads)."""
    threads = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass                                     # TensorFlow already runs; it read the variable itself


class CachedNetworks(Networks):
    """predict_scene's networks on a worker that maps scene after scene: the model loaded once and its network
    call traced once per process, kept per model file (path, modification time, size) and device; only the last
    model is kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict = {}
        self._mapping: dict = {}
        self._runners: dict = {}

    def load(self, model_path, runtime):
        path = resolve_model_path(model_path)
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, runtime.choice.name, runtime.device)
        with self._lock:
            if key not in self._models:
                self._models.clear()
                self._mapping.clear()
                self._runners.clear()
                if runtime.choice.name == TENSORFLOW:
                    _configure_threads()
                self._models[key] = super().load(model_path, runtime)
            return self._models[key]

    def mapping(self, loaded, window):
        with self._lock:
            key = (id(loaded.network), window)
            if key not in self._mapping:
                self._mapping[key] = super().mapping(loaded, window)
            return self._mapping[key]

    def runner(self, network, runtime):
        with self._lock:
            key = (id(network), runtime.choice.name, runtime.device)
            if key not in self._runners:
                self._runners[key] = super().runner(network, runtime)
            return self._runners[key]


#: This worker process's networks (made by the first task it runs).
_NETWORKS: list[CachedNetworks] = []
_NETWORKS_LOCK = threading.Lock()


def worker_networks() -> CachedNetworks:
    """The networks of this worker process, made once."""
    with _NETWORKS_LOCK:
        if not _NETWORKS:
            _NETWORKS.append(CachedNetworks())
        return _NETWORKS[0]


def run_task(job: dict, model_path: str, options: dict, batch_id: str, out_dir: str) -> dict:
    """map_scene from the plain values a task carries (core.cluster.client.TASK)."""
    return map_scene(SceneJob(**job), model_path, PredictOptions(**options), batch_id, out_dir)


def map_scene(job: SceneJob, model_path: str, options: PredictOptions, batch_id: str, out_dir: str) -> dict:
    """The task of one scene: map it with predict_scene. Never raises: a failure comes back as status 'failed'
    with the sentence python -m core.predict would print. Returns status, worker, seconds, km2 and message."""
    start = time.perf_counter()
    worker = worker_name()
    previous = claim_scene(Path(out_dir), job.stem, batch_id, worker)
    notes = [f"retried: worker {previous} stopped while mapping it."] if previous else []
    status, km2 = "failed", None
    try:
        predict_scene(job.source, job.hse, job.lcz, model_path=model_path, options=options,
                      networks=worker_networks())
        status, km2 = "done", output_km2(job.hse)
    except Exception as exc:
        if os.environ.get("URBANMTL_DEBUG") and not isinstance(exc, UrbanMTLError):
            import traceback

            traceback.print_exc()
        notes.append(failure_message(exc))
    finally:
        release_scene(Path(out_dir), job.stem)
    return {"status": status, "worker": worker, "seconds": time.perf_counter() - start, "km2": km2,
            "message": " ".join(notes)}
