"""Checks shared by the tests of the library adapters (edge/aiomqtt_adapter.py,
central/gmqtt_adapter.py): each failure names the library, the installed version, the version
the adapter was written for and the private name that moved."""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Callable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


class Checker:
    """Fails a test loudly about one adapter's private use of one library."""

    def __init__(self, adapter: str, written_for: Mapping[str, str]) -> None:
        self.adapter = adapter
        self.written_for = written_for

    def fail(self, lib: str, name: str, problem: str) -> None:
        pytest.fail(
            f"{lib} {version(lib)} (installed): {name} {problem}. {self.adapter} uses this "
            f"private name and was written for {lib} {self.written_for[lib]}: read its docstring, "
            f"adapt it to the new version (or keep the pin), then update its WRITTEN_FOR.",
            pytrace=False,
        )

    def has(self, lib: str, obj: object, attr: str, owner: str) -> Any:
        """``obj.attr``, or a loud failure naming ``owner.attr``."""
        if not hasattr(obj, attr):
            self.fail(lib, f"{owner}.{attr}", "is gone")
        return getattr(obj, attr)

    def is_a(self, lib: str, value: object, kind: type, name: str) -> None:
        if not isinstance(value, kind):
            self.fail(lib, name, f"is a {type(value).__name__}, no longer a {kind.__name__}")

    def params(self, lib: str, fn: Callable[..., Any], name: str, expected: list[str]) -> None:
        """The parameter names of ``fn`` (without ``self``) start with ``expected``, in order."""
        if not callable(fn):
            self.fail(lib, name, "is no longer callable")
        got = [p for p in inspect.signature(fn).parameters if p != "self"]
        if got[: len(expected)] != expected:
            self.fail(lib, name, f"takes ({', '.join(got)}), not ({', '.join(expected)})")

    def versions(self) -> None:
        """Installed versions are the ones the adapter was written for, and pyproject.toml pins
        exactly those (an upgrade must come with a review of the adapter)."""
        deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
        for lib, written in self.written_for.items():
            pin = f"{lib}=={written}"
            assert any(d.split(";")[0].replace(" ", "") == pin for d in deps), (
                f"pyproject.toml must pin {pin}: {self.adapter} relies on its private names"
            )
            if version(lib) != written:
                self.fail(lib, "the installed version", f"differs from {written}")
