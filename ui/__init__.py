"""QGIS side of urbanmtl: the Processing provider, the mapping algorithm and the output styles (imports qgis)."""
