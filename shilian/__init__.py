"""The ``shilian`` command line and the demo: the composition root over edge, central and wire."""

__version__ = "0.1.0"
