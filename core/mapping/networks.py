"""Where predict_scene gets its network: the runtime chosen for the run (core.network.runtime), the model read for it
and its call on batches. On LiteRT only the card and the LiteRT export are read; TensorFlow, Keras and the .keras
file are loaded on the TensorFlow runtime alone, here and nowhere else on the mapping path (the one lazy import of a
mapping run: function-local imports in this module only, so that a run on LiteRT never loads TensorFlow).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..common.errors import UrbanMTLError
from ..common.spec import MODEL_BANDS, check_card
from ..network.files import LiteRTExport, read_card, resolve_model_path
from ..network.runtime import LITERT, RuntimeChoice, choose_runtime

CPU = "/CPU:0"


@dataclass
class LiteModel:
    """A model mapped on LiteRT: its card, its .keras path (the name the outputs are tagged with) and its export."""

    card: dict
    path: Path
    network: LiteRTExport


@dataclass(frozen=True)
class RunRuntime:
    """The runtime a run maps with: the choice, the device ('/CPU:0' or '/GPU:0'), the package version and the
    threads the network gets (None: TensorFlow's own choice, every core)."""

    choice: RuntimeChoice
    device: str
    version: str
    threads: Optional[int]

    def tag(self) -> str:
        """What the outputs' URBANMTL_RUNTIME tag says: the runtime and its version (the threads vary per machine
        and process, the maps do not)."""
        return f"{'LiteRT' if self.choice.name == LITERT else 'TensorFlow'} {self.version}"

    def describe(self) -> str:
        """E.g. 'LiteRT 2.3.0 (XNNPACK) on CPU, 2 threads'."""
        name = "LiteRT" if self.choice.name == LITERT else "TensorFlow"
        extra = " (XNNPACK)" if self.choice.name == LITERT else ""
        threads = f"{self.threads} threads" if self.threads else "all cores"
        return f"{name} {self.version}{extra} on {self.device.strip('/').split(':')[0]}, {threads}"


def read_model(model_path: Optional[str]) -> tuple[Path, dict]:
    """(the .keras path, its card) of the model a run asks for, checked against the engine's contract and for both
    tasks; no runtime is loaded."""
    path = resolve_model_path(model_path)
    card = read_card(path)
    check_card(card, f"The model '{path}'")
    in_bands = (card.get("config") or {}).get("in_bands") if isinstance(card.get("config"), dict) else None
    if isinstance(in_bands, int) and in_bands != len(MODEL_BANDS):
        raise UrbanMTLError(
            f"The model '{path}' expects {in_bands} input bands, but urbanmtl feeds the {len(MODEL_BANDS)} Sentinel-2 "
            f"bands {', '.join(MODEL_BANDS)}. Train a model with in_bands=10.")
    outputs = card.get("outputs")
    if isinstance(outputs, dict) and outputs and not {"hse", "lcz"} <= set(outputs):
        have = "HSE" if "hse" in outputs else "LCZ"
        raise UrbanMTLError(
            f"The model '{path}' predicts only {have}, but mapping a scene needs both HSE and LCZ. Use a multitask "
            f"model (variant mtl_*), e.g. the bundled one.")
    return path, card


def run_runtime(requested: str, device: str, model_file: Path, card: dict, window: Optional[int]) -> RunRuntime:
    """The runtime of a run (core.network.runtime.choose_runtime), its device, version and threads. TensorFlow is
    imported here when it is the choice (select_device needs it)."""
    choice = choose_runtime(requested, device, model_file, card, window)
    if choice.name == LITERT:
        from ..network import litert

        return RunRuntime(choice, CPU, litert.LITERT_VERSION, litert.cpu_threads())
    from ..network import inference

    tf_device = inference.select_device(device)
    return RunRuntime(choice, tf_device, inference.tensorflow_version(), inference.tensorflow_threads())


class Networks:
    """predict_scene's source of networks: `load` reads the model for the run's runtime, `mapping` gives the network to
    map with (with windowed attention when asked, core.network.model.with_attention_window; on LiteRT the export,
    made with it), `runner` its call on batches. All happen once per scene; a caller mapping many scenes in one
    process passes a subclass that keeps them (core.cluster.tasks.CachedNetworks)."""

    def load(self, model_path: Optional[str], runtime: RunRuntime) -> Any:
        if runtime.choice.name == LITERT:
            path, card = read_model(model_path)
            return LiteModel(card=card, path=path, network=runtime.choice.litert)
        import tensorflow as tf

        from ..network import saving

        with tf.device(runtime.device):
            loaded = saving.load_model(model_path)
        read_model(model_path)          # the same checks as on LiteRT, with the card Keras's loader read
        return loaded

    def mapping(self, loaded: Any, window: Optional[int]) -> Any:
        if isinstance(loaded, LiteModel) or window is None:
            return loaded.network
        from ..network import model

        return model.with_attention_window(model.ModelConfig(**loaded.card["config"]), loaded.network, window)

    def runner(self, network: Any, runtime: RunRuntime) -> Any:
        if isinstance(network, LiteRTExport):
            from ..network import litert

            return litert.LiteRTRunner(network, runtime.threads or litert.cpu_threads())
        from ..network import inference

        return inference.NetworkRunner(network, runtime.device)
