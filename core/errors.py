"""The one exception type that carries a user-facing message."""


class UrbanMTLError(Exception):
    """A problem the user can fix: the message says what is wrong, with which input, and what to do.

    CLIs print it without a traceback and exit with status 2; the QGIS algorithm raises it as a
    QgsProcessingException.
    """
