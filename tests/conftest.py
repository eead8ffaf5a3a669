"""Process-wide test set-up that must run before any test module imports TensorFlow."""

import ctypes

# TensorFlow's library carries its own SQLite and exposes it globally; QGIS started in the same process
# afterwards crashes in initQgis. Loading the system SQLite first avoids that (the real qgis and
# qgis_process programs load it themselves, so users are not affected).
try:
    ctypes.CDLL("libsqlite3.so.0", mode=ctypes.RTLD_GLOBAL)
except OSError:
    pass


# --- leaving the test process ---
# This one process holds TensorFlow, QGIS (qgis.testing.start_app) and Dask clients at once; tearing all of
# them down in the interpreter's exit handlers can crash (SIGSEGV after the summary: the suite passed, the exit
# status said 139). Users never run them together (the plugin runs TensorFlow in a child process). Once pytest
# has printed its summary, the process leaves with pytest's own exit status, skipping those exit handlers.
import os as _os
import sys as _sys

_EXIT_STATUS = {"code": None}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["code"] = int(exitstatus)


def pytest_unconfigure(config):
    if _EXIT_STATUS["code"] is not None and _os.environ.get("URBANMTL_TEST_NORMAL_EXIT") != "1":
        _sys.stdout.flush()
        _sys.stderr.flush()
        _os._exit(_EXIT_STATUS["code"])
