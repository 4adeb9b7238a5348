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


def template_database() -> str:
    """A new database migrated to the newest schema, to copy with :func:`database_from`; its name
    (the caller drops it with :func:`drop_database`)."""
    from central import migrate

    name = f"shilian_tmpl_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(url_of(name))  # its connections are closed when it returns
    return name


def url_of(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


@contextmanager
def database_from(template: str) -> Iterator[str]:
    """The URL of a new database copied from ``template`` (a file copy on the server: quick),
    dropped afterwards."""
    name = f"shilian_test_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield url_of(name)
    finally:
        drop_database(name)


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def end_sessions(url: str) -> int:
    """What a server restart does to the clients of the database ``url`` names: every session
    on it ended by the server. How many were."""
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        ).fetchone()
    return 0 if row is None else int(row[0])
