"""The release of the shilian distribution. Every part reports it (the node's birth carries it
as ``sw_version``), so it lives at the bottom layer that every part may import; pyproject.toml
reads it from here."""

__version__ = "0.1.0"
