"""The dashboard's string catalogue (``central/dashboard/strings.toml``): zh-CN first, English
second. One place for every user-facing string of the pages; the page receives the catalogue of
its language inline and fills placeholders itself."""

from __future__ import annotations

import functools
import tomllib
from importlib import resources

#: Languages of the catalogue; the first is the default (users are Chinese).
LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = LANGUAGES[0]


class CatalogueError(ValueError):
    """The catalogue file is malformed (a packaging bug, not a user's mistake)."""


@functools.cache
def catalogue() -> dict[str, dict[str, str]]:
    """``{key: {language: text}}``, every key in every language (checked once, on first use)."""
    raw = (resources.files("central") / "dashboard" / "strings.toml").read_text(encoding="utf-8")
    data = tomllib.loads(raw)
    out: dict[str, dict[str, str]] = {}
    for key, texts in data.items():
        if not isinstance(texts, dict) or set(texts) != set(LANGUAGES):
            raise CatalogueError(f"strings.toml: {key!r} must have exactly {LANGUAGES}")
        if not all(isinstance(v, str) for v in texts.values()):
            raise CatalogueError(f"strings.toml: {key!r} has a non-string text")
        out[key] = dict(texts)
    return out


def language(requested: str | None) -> str:
    """The catalogue language for a ``lang`` query value: ``en``/``en-*`` → English, else zh-CN."""
    if requested and requested.lower().split("-")[0] == "en":
        return "en"
    return DEFAULT_LANGUAGE


def strings(lang: str) -> dict[str, str]:
    """Every string in ``lang`` (one of :data:`LANGUAGES`)."""
    return {key: texts[lang] for key, texts in catalogue().items()}
