"""Registers the `desktop` marker (the real QGIS desktop under Xvfb): `pytest -m "not desktop"` skips it."""


def pytest_configure(config):
    config.addinivalue_line("markers", "desktop: starts the real QGIS desktop (/usr/bin/qgis) under Xvfb with GLX")
