"""Shared fixtures: real peers on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from shilian.broker import Mosquitto
from tests.postgres import scratch_database


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private mosquitto 2 broker (persistence on) on a free port; ``broker.restart()`` keeps
    port and data."""
    (tmp_path / "mosquitto").mkdir()
    b = Mosquitto(workdir=tmp_path / "mosquitto")
    b.start()
    try:
        yield b
    finally:
        b.stop()


# Shared, noisy machines: no per-example deadline (timings are for bench/, not tests).
settings.register_profile("shilian", deadline=None, max_examples=200)
settings.load_profile("shilian")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (tests/postgres.py), dropped after the test."""
    with scratch_database() as url:
        yield url
