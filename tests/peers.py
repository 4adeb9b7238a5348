"""The real peers and tools the tests need (browser, promtool, shellcheck, ...).

On a developer's machine a missing one skips its tests with the install hint. Under CI (``CI``
set, as .ci/run is run) it fails them instead: a green CI must never hide a part nobody tested.
``make test`` installs every one of them (the Makefile's SYS_PKGS).
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def missing(what: str, hint: str, *, module_level: bool = False) -> NoReturn:
    """Skip (or, under CI, fail) because ``what`` is not installed; ``hint`` says how to get it."""
    msg = f"{what} is not installed ({hint})"
    if os.environ.get("CI"):
        pytest.fail(f"{msg}: required under CI", pytrace=False)
    pytest.skip(msg, allow_module_level=module_level)


def program(name: str, hint: str, *, module_level: bool = False) -> str:
    """The path of program ``name``, or :func:`missing`."""
    path = shutil.which(name)
    if path is None:
        missing(name, hint, module_level=module_level)
    return path
