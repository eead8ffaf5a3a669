"""urbanmtl engine: multitask HSE regression and LCZ classification from Sentinel-2, without QGIS."""

__version__ = "0.1.0"
