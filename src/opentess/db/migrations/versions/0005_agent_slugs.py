"""An agent's slug is unique among the live agents of its workspace (``agents apply`` finds an
agent by it). Duplicates made before are renamed ``slug-<id>`` first.

Revision ID: 0005_agent_slugs
Revises: 0004_context
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_agent_slugs"
down_revision: str | None = "0004_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, workspace_id, slug FROM agents WHERE deleted_at IS NULL ORDER BY id")
    ).fetchall()
    seen: set[tuple[int, str]] = set()
    for agent_id, workspace_id, slug in rows:
        if (workspace_id, slug) in seen:
            conn.execute(
                sa.text("UPDATE agents SET slug = :slug WHERE id = :id"), {"slug": f"{slug}-{agent_id}", "id": agent_id}
            )
        else:
            seen.add((workspace_id, slug))
    op.create_index(
        "uq_agents_workspace_slug",
        "agents",
        ["workspace_id", "slug"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_agents_workspace_slug", table_name="agents")
