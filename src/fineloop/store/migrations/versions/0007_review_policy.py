"""Review policy: how a project's review queue is ranked.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


# A plain ADD/DROP COLUMN, as in 0005: a batch copy of `projects` on SQLite would cascade.


def upgrade() -> None:
    op.add_column(
        "projects",
        sa.Column("review_policy", sa.JSON(), nullable=False, server_default=sa.text("'{}'")),
    )


def downgrade() -> None:
    op.drop_column("projects", "review_policy")
