"""Alembic environment: runs on the connection handed over by ``opentess.db.engine``."""

from __future__ import annotations

from alembic import context

from opentess.db.models import Base, include_name

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI always passes a connection
    raise RuntimeError("run migrations with `opentess migrate`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_name=include_name,  # not the FTS5 tables the models do not manage
)
with context.begin_transaction():
    context.run_migrations()
