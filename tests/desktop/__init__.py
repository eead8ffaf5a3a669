"""The real QGIS desktop under Xvfb with OpenGL: the plugin as a user runs it."""
