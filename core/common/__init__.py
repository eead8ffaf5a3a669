"""What every package builds on: the model's input/output contract and the engine's defaults (spec), the Sentinel-2
band catalogue (bands), the LCZ legend and similarity matrix (lcz), the exceptions that carry a message for the
user (errors), atomic file writes (atomic) and stop signals deferred through critical sections (signals)."""

from .errors import InputError, Interrupted, MissingPackage, OutputError, UrbanMTLError

#: The engine's version (the plugin's is metadata.txt's).
__version__ = "0.2.0"

__all__ = ["InputError", "Interrupted", "MissingPackage", "OutputError", "UrbanMTLError", "__version__"]
