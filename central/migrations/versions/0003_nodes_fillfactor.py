"""PostgreSQL: leave half of each page of nodes free, so that a node's row update stays on its page
(HOT: no new index entries). Pages already full get the room as their rows are next moved or the
table is rewritten (VACUUM FULL); new pages get it at once. SQLite: nothing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE nodes SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE nodes RESET (fillfactor)")
