"""Serialising the writers of one parent row (an agent's files, a workspace's files, an agent's
webhooks) so that a limit counted inside the transaction is exact and concurrent writers never
deadlock.

- PostgreSQL: ``lock_parent`` takes ``FOR NO KEY UPDATE`` on the parent row as the transaction's
  first statement. Writers of the same parent queue behind it; the foreign-key checks of other
  inserts referencing the row (``FOR KEY SHARE``) do not conflict with it, so executions and
  other children are never blocked. Taking it after an insert that references the row would
  deadlock: each transaction would hold the row's key-share lock while asking for the update lock.
- SQLite: nothing to do here; the transaction's first write takes the database's write lock, so
  a caller counts after its insert (and raises, rolling back, when the count is over the limit).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection


async def lock_parent(conn: AsyncConnection, id_column: Any, row_id: int) -> None:
    """Queue behind the other writers of the row ``id_column == row_id`` (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(id_column).where(id_column == row_id).with_for_update(key_share=True))


def is_foreign_key_error(exc: IntegrityError) -> bool:
    """The row an insert referenced is gone (deleted by a concurrent request)."""
    text = str(exc.orig).lower()
    return "foreign key" in text


def conflict_insert(dialect_name: str, table: Any) -> Any:
    """``INSERT`` of the database's dialect, the one that takes ``ON CONFLICT`` (DO NOTHING / DO
    UPDATE): a row written by a concurrent request is not an error."""
    if dialect_name == "postgresql":
        return pg_insert(table)
    return sqlite_insert(table)
