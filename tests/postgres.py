"""A real PostgreSQL database per test: the server on 127.0.0.1:5432 (trust auth on test
machines; ``SHILIAN_TEST_PG`` overrides the admin URL), a database ``shilian_test_<random>``
created for the test and dropped after it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

ADMIN_URL = os.environ.get("SHILIAN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_database() -> Iterator[str]:
    """The URL of a new empty database, dropped (with any connection left on it) afterwards."""
    name = f"shilian_test_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
