"""The writer through SQLAlchemy: for the databases no direct writer serves (an in-memory SQLite
database, which exists only on the engine's own connection; PostgreSQL through a driver other
than asyncpg; …), and for the reaper's statements on PostgreSQL.

One transaction per call on a connection of the engine's pool; SQLAlchemy does the type handling.
The two statements are built once, with their values as parameters, so SQLAlchemy compiles each
column set once and keeps its SQL in its statement cache."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import UpdateBase

from opentess.store.writers.base import ExecutionWriter, WriterOptions, register_writer
from opentess.store.writers.columns import EXECUTIONS

_INSERT = insert(EXECUTIONS).returning(EXECUTIONS.c.id)
_UPDATE = update(EXECUTIONS).where(EXECUTIONS.c.id == bindparam("execution_id_"))


@register_writer("sqlalchemy")  # chosen by name, or when no other writer serves the database
class SqlAlchemyWriter(ExecutionWriter):
    def __init__(self, engine: AsyncEngine, options: WriterOptions = WriterOptions()) -> None:
        super().__init__(engine, options)
        self._writing = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def _accepted(self) -> Iterator[None]:
        """Counts the writes under way, for aclose to wait for."""
        self._writing += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._writing -= 1
            if not self._writing:
                self._idle.set()

    async def insert(self, values: dict[str, Any]) -> int:
        with self._accepted():
            async with self.engine.begin() as conn:
                return int((await conn.execute(_INSERT, values)).scalar_one())

    async def update(self, execution_id: int, values: dict[str, Any]) -> int:
        with self._accepted():
            async with self.engine.begin() as conn:
                return int((await conn.execute(_UPDATE, {**values, "execution_id_": execution_id})).rowcount)

    async def execute(self, *statements: UpdateBase) -> list[int]:
        with self._accepted():
            async with self.engine.begin() as conn:
                return [int((await conn.execute(statement)).rowcount) for statement in statements]

    async def aclose(self) -> None:
        await self._idle.wait()  # the engine itself belongs to the store, which disposes of it
