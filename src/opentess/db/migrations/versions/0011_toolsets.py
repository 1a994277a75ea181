"""Executions keep what a toolset did: its steps (searches, page reads, tool calls) and the
sources the answer may cite.

Revision ID: 0011_toolsets
Revises: 0006_jobs
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_toolsets"
down_revision: str | None = "0006_jobs"
branch_labels: str | Sequence[str] | None = ("toolsets",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("steps", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("sources", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("sources")
        batch.drop_column("steps")
