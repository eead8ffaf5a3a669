"""Which runtime runs the network of a mapping run, decided before either is imported: LiteRT (ai-edge-litert, XNNPACK
on the CPU; core.network.litert) or TensorFlow (core.network.inference with core.network.saving).

`auto` takes LiteRT on the CPU when the model has a LiteRT export for the attention the run maps with and the
package is installed; TensorFlow when a GPU is asked for, or found with a TensorFlow build that can use it, when
the model has only its .keras file, or when LiteRT is not installed (no wheel for Intel Macs, for example). This
module imports neither runtime: a run on LiteRT never loads TensorFlow.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..common.errors import MissingPackage, UrbanMTLError
from .files import LiteRTExport, litert_export

LITERT, TENSORFLOW = "litert", "tensorflow"
#: Distributions whose presence says the installed TensorFlow can use an NVIDIA GPU (pip's tensorflow[and-cuda]).
CUDA_DISTRIBUTIONS = ("nvidia-cudnn-cu12", "nvidia-cudnn-cu11")


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime of a run ("litert" or "tensorflow"), the LiteRT export it maps with (litert only) and why."""

    name: str
    reason: str
    litert: Optional[LiteRTExport] = None


def installed(module: str) -> bool:
    """Whether `module` can be imported here, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU with its driver on this machine: the driver's device files on Linux, nvidia-smi elsewhere."""
    if platform.system() == "Linux":
        return bool(glob.glob("/proc/driver/nvidia/gpus/*")) or os.path.exists("/dev/nvidia0")
    return shutil.which("nvidia-smi") is not None


def tensorflow_can_use_gpu() -> bool:
    """Whether the installed TensorFlow is a build that runs on an NVIDIA GPU (Linux with the CUDA wheels; TensorFlow
    has no native GPU build for Windows or macOS since 2.11), told from the installed distributions alone."""
    if platform.system() != "Linux" or not installed("tensorflow"):
        return False
    for name in CUDA_DISTRIBUTIONS:
        try:
            importlib.metadata.version(name)
            return True
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


def no_litert_note() -> str:
    """Why LiteRT is not here, for the log: the platforms its wheels cover."""
    machine = f"{platform.system()} {platform.machine()}"
    return (f"LiteRT (ai-edge-litert) is not installed in {os.path.basename(sys.executable)} on {machine}; its "
            f"wheels cover Linux x86-64/arm64, Windows x64 and macOS arm64 (none for Intel Macs)")


def choose_runtime(requested: str, device: str, model_path: Path, card: dict, window: Optional[int]) -> RuntimeChoice:
    """The runtime for a run asking for `requested` (auto | litert | tensorflow) on `device` (auto | cpu | gpu), with
    the model at model_path (its card `card`) mapped with attention window `window` (None: over each tile). Raises
    UrbanMTLError, naming the fix, when the runtime asked for cannot run it."""
    export = litert_export(model_path, card)
    litert_file = export if export is not None and export.window == window else None
    if requested == LITERT:
        _check_litert(device, model_path, export, litert_file, window)
        return RuntimeChoice(LITERT, "asked for", litert_file)
    if requested == TENSORFLOW:
        return _tensorflow("asked for")
    if device == "gpu":
        return _tensorflow("a GPU was asked for (LiteRT maps on the CPU)")
    if device == "auto" and nvidia_gpu_present() and tensorflow_can_use_gpu():
        return _tensorflow("a GPU was found and TensorFlow's CUDA build is installed")
    if litert_file is None:
        why = ("the model has no LiteRT export (model.tflite; make one with 'python -m core.export_litert')"
               if export is None else "the model's LiteRT export maps with windowed attention; --attention tile "
                                      "needs TensorFlow")
        return _tensorflow(why)
    if not installed("ai_edge_litert"):
        return _tensorflow(no_litert_note())
    return RuntimeChoice(LITERT, "the model has a LiteRT export and the network runs on the CPU", litert_file)


def _check_litert(device: str, model_path: Path, export: Optional[LiteRTExport], litert_file: Optional[LiteRTExport],
                  window: Optional[int]) -> None:
    if device == "gpu":
        raise UrbanMTLError("LiteRT maps on the CPU, but device 'gpu' was asked for. Use --runtime tensorflow for "
                            "the GPU, or --device cpu.")
    if export is None:
        raise UrbanMTLError(f"The model '{model_path}' has no LiteRT export beside it (model.tflite named in its "
                            f"card). Make one with 'python -m core.export_litert {model_path}', or use --runtime "
                            f"auto or tensorflow.")
    if litert_file is None:
        raise UrbanMTLError(f"The LiteRT export of '{model_path}' maps with attention over {2 * export.window} px windows, "
                            f"not {'each tile' if window is None else f'{2 * window} px windows'}. Use --attention "
                            f"window, or --runtime tensorflow.")
    if not installed("ai_edge_litert"):
        raise MissingPackage("ai_edge_litert", f"{no_litert_note()}. Install it with 'python -m pip install "
                             f"ai-edge-litert' (in QGIS: Processing > urbanmtl > Install engine), or use --runtime "
                             f"tensorflow.")


def _tensorflow(reason: str) -> RuntimeChoice:
    if not installed("tensorflow"):
        module = "ai_edge_litert" if not installed("ai_edge_litert") else "tensorflow"
        raise MissingPackage(module,
            f"This run needs TensorFlow ({reason}), but TensorFlow is not installed. Install it with 'python -m pip "
            f"install tensorflow-cpu' (in QGIS: Processing > urbanmtl > Install engine, with training), or map on "
            f"the CPU with a model that has a LiteRT export (the bundled one has).")
    return RuntimeChoice(TENSORFLOW, reason)
