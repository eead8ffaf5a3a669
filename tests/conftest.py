"""Process-wide test set-up that must run before any test module imports TensorFlow."""

import ctypes

# TensorFlow's library carries its own SQLite and exposes it globally; QGIS started in the same process
# afterwards crashes in initQgis. Loading the system SQLite first avoids that (the real qgis and
# qgis_process programs load it themselves, so users are not affected).
try:
    ctypes.CDLL("libsqlite3.so.0", mode=ctypes.RTLD_GLOBAL)
except OSError:
    pass
