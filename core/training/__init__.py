"""Training the network: run.train (one run, step by step, from a config.TrainConfig), the data pipeline
(datasets), the Keras model with the losses and learned task weights (trainer, losses), the run's callbacks and
folder (callbacks, run_folder), and what fine-tuning changes (transfer: frozen layers, start weights,
distillation). trainer, callbacks and losses load TensorFlow when imported; this package imports neither."""

from .config import TrainConfig, load_config_file, make_config
from .run import train

__all__ = ["TrainConfig", "load_config_file", "make_config", "train"]
