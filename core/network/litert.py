"""The mapping network on LiteRT (ai-edge-litert, XNNPACK on the CPU): no TensorFlow. LiteRTRunner runs the model's
LiteRT export (core.network.files.LITERT_FILE, made by core.network.export) on batches, as
core.network.inference.NetworkRunner does with TensorFlow: (B, H, W, 10) float32 -> (hse (B, H/2, W/2),
lcz (B, H/2, W/2, 17)). The export's input shape is dynamic: the input tensor is resized when a batch of another
shape comes (the tiler makes one tile shape per scene, and a smaller last batch at most).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ai_edge_litert import __version__ as LITERT_VERSION
from ai_edge_litert.interpreter import Interpreter

from ..common.errors import UrbanMTLError
from ..common.signals import signals_deferred
from ..common.spec import MODEL_BANDS
from .files import LiteRTExport

#: The variable that sets the threads XNNPACK uses (else TF_NUM_INTRAOP_THREADS, else every core this process may
#: run on).
THREADS_VARIABLE = "URBANMTL_THREADS"


def cpu_threads() -> int:
    """Threads for the network on the CPU: URBANMTL_THREADS, else TF_NUM_INTRAOP_THREADS (what a Dask worker is
    given, core.cluster.client), else the cores this process may use (its affinity where the OS has one)."""
    for name in (THREADS_VARIABLE, "TF_NUM_INTRAOP_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    affinity = getattr(os, "sched_getaffinity", None)      # Linux; Windows and macOS have none
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


class _Interpreter:
    """One LiteRT interpreter of a file, its input resized when a batch of another shape comes."""

    def __init__(self, path: Path, threads: int) -> None:
        try:
            with signals_deferred():
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        except (ValueError, RuntimeError) as exc:
            raise UrbanMTLError(
                f"Cannot load the LiteRT model '{path}' ({str(exc).splitlines()[0][:200]}). It is damaged or from "
                f"another network: export it again with 'python -m core.export_litert', or map with --runtime "
                f"tensorflow."
            ) from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1 or int(inputs[0]["shape_signature"][-1]) != len(MODEL_BANDS):
            raise UrbanMTLError(f"The LiteRT model '{path}' does not take one {len(MODEL_BANDS)}-band image. Export "
                                f"it again with 'python -m core.export_litert'.")
        self.input = inputs[0]["index"]
        self.shape: tuple[int, ...] = ()         # the input shape allocated (none yet for a dynamic file)
        if not any(int(n) < 0 for n in inputs[0]["shape_signature"]):
            self.shape = tuple(int(n) for n in inputs[0]["shape"])
            self._outputs()

    def _outputs(self) -> None:
        """Allocate and find the outputs (HSE: 1 channel, LCZ: 17)."""
        self.interpreter.allocate_tensors()
        for detail in self.interpreter.get_output_details():
            if int(detail["shape"][-1]) == 1:
                self.hse = detail["index"]
            else:
                self.lcz = detail["index"]

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if batch.shape != self.shape:
            self.interpreter.resize_tensor_input(self.input, list(batch.shape), strict=False)
            self._outputs()
            self.shape = batch.shape
        self.interpreter.set_tensor(self.input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.hse)[..., 0], self.interpreter.get_tensor(self.lcz)


class LiteRTRunner:
    """Calls a model's LiteRT export on batches: a batch of one of the export's fixed shapes runs on that file, any
    other on the file with a dynamic input shape. Each interpreter is made on its first batch, so a run whose tiles
    all have the default shape holds one (the memory of its activations) and a small scene's run another."""

    runtime = "litert"
    version = LITERT_VERSION

    def __init__(self, export: LiteRTExport, threads: int) -> None:
        self.export, self.threads = export, threads
        self._interpreters: dict[Path, _Interpreter] = {}
        self._file(export.dynamic)      # a damaged export is refused before the first tile

    def _file(self, path: Path) -> _Interpreter:
        if path not in self._interpreters:
            self._interpreters[path] = _Interpreter(path, self.threads)
        return self._interpreters[path]

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        path = self.export.fixed.get(tuple(batch.shape), self.export.dynamic)
        with signals_deferred():
            return self._file(path)(batch)
