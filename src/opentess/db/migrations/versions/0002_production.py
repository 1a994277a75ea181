"""Production mode: per-token rate limits, run ownership by server instance, instance heartbeats.

Revision ID: 0002_production
Revises: 0001_initial
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_production"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("rpm_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("concurrency_limit", sa.Integer(), nullable=True))
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("instance_id", sa.String(36), nullable=True))
    op.create_table(
        "server_instances",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_instances")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("instance_id")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("concurrency_limit")
        batch.drop_column("rpm_limit")
