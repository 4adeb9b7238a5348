"""Where the dashboard's pages, scripts and styles are installed (package data of central)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

ASSETS = Path(str(resources.files("central") / "dashboard"))
