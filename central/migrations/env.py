"""Alembic's environment for central: always online, on the connection the caller passes in
``config.attributes["connection"]`` (central.migrate), never a URL of its own."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from central.schema import metadata

connection: Connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: batch mode copies the table (a no-op on PostgreSQL).
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
