"""Shared fixtures: real peers on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from central.db import Target
from shilian.broker import Mosquitto
from tests.postgres import database_from, drop_database, scratch_database, template_database


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


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per test session, copied for each ``db_target`` test."""
    name = template_database()
    try:
        yield name
    finally:
        drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Central's database on each backend in turn: a SQLite file path (not created yet), or the
    URL of a fresh PostgreSQL database at the newest schema, dropped after the test."""
    if request.param == "sqlite":
        yield tmp_path / "central.db"
        return
    with database_from(request.getfixturevalue("pg_template")) as url:
        yield url
