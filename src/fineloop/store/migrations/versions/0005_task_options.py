"""Task options: what a project's task family needs to know about it (NER: entity types).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


# A plain ADD/DROP COLUMN, never a batch copy of the table: on SQLite a batch copy drops
# `projects`, and its ON DELETE CASCADE would empty every table that refers to it.


def upgrade() -> None:
    op.add_column(
        "projects",
        sa.Column("task_options", sa.JSON(), nullable=False, server_default=sa.text("'{}'")),
    )


def downgrade() -> None:
    op.drop_column("projects", "task_options")
