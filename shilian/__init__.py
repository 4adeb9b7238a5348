"""The ``shilian`` command line and the demo: the composition root over every other package."""

from wire.version import __version__

__all__ = ["__version__"]
