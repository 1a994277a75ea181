"""An agent may bound the answers of its runs (``max_tokens``), under the model's own default.

Revision ID: 0010_agent_max_tokens
Revises: 0006_jobs
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_agent_max_tokens"
down_revision: str | None = "0006_jobs"
branch_labels: str | Sequence[str] | None = ("agents",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("max_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("max_tokens")
