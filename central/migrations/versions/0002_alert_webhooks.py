"""Admins change webhook receivers from the page: their changes over central.toml's.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "alert_webhooks" in sa.inspect(op.get_bind()).get_table_names():
        return  # made by a build that created its tables itself
    op.create_table(
        "alert_webhooks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated", sa.Double().with_variant(sa.REAL(), "sqlite"), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.CheckConstraint("id = 1", name="alert_webhooks_one_row"),
    )


def downgrade() -> None:
    op.drop_table("alert_webhooks")
