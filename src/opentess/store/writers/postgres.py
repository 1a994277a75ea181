"""The PostgreSQL writer: the writes of concurrent calls go out together through asyncpg.

Each batch is one pipelined ``fetchmany`` per statement shape (parse once, bind/execute per row,
one sync: one round trip and one commit for the whole batch, as the SQLite writer's group commit).
``fetchmany`` is atomic, so a batch that fails is written again row by row, and each caller gets
its own row's outcome. The reaper's statements (``execute``) are rare and need SQLAlchemy to
compile them, and PostgreSQL has no single-writer lock to keep them off: they run on the engine."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import UpdateBase

from opentess.store.writers.base import ExecutionWriter, WriterOptions, register_writer
from opentess.store.writers.columns import EXECUTIONS, Statements
from opentess.store.writers.engine import SqlAlchemyWriter

MAX_FLUSHES = 2
"""Batches a PostgreSQL writer keeps in flight at once: while one waits for the server, the next
one collects what arrives meanwhile."""


def _serves(url: URL) -> bool:
    return url.get_backend_name() == "postgresql" and url.get_driver_name() == "asyncpg"


@register_writer("postgres", serves=_serves)
class PostgresWriter(ExecutionWriter):
    def __init__(self, engine: AsyncEngine, options: WriterOptions = WriterOptions()) -> None:
        super().__init__(engine, options)
        if not _serves(engine.url):
            raise ValueError(f"the PostgreSQL writer needs a postgresql+asyncpg database, not {engine.url!r}")
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        # RETURNING id on updates too: fetchmany returns rows, not row counts
        self._sql = Statements(EXECUTIONS, "postgresql", lambda n: f"${n}", returning=" RETURNING id")
        self._statements = SqlAlchemyWriter(engine, options)
        self._lock = asyncio.Lock()
        self._pool: Any = None
        self._pending: dict[str, list[_PgOp]] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._flushing = 0  # flushes still looping (a task stays in _flushes until its done-callback runs)

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=self.options.pool_size, reset=_keep_session
                    )
        return self._pool

    def _submit(self, sql: str, params: tuple[Any, ...], row_id: int | None) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(sql, []).append(_PgOp(future, params, row_id))
        if self._flushing < MAX_FLUSHES:
            self._flushing += 1
            task = asyncio.get_running_loop().create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        return future

    async def insert(self, values: dict[str, Any]) -> int:
        shape = self._sql.insert(values)
        return await self._submit(shape.sql, tuple(shape.params(values)), None)

    async def update(self, execution_id: int, values: dict[str, Any]) -> int:
        shape = self._sql.update(values)
        params = shape.params(values)
        params.append(execution_id)
        return await self._submit(shape.sql, tuple(params), execution_id)

    async def execute(self, *statements: UpdateBase) -> list[int]:
        return await self._statements.execute(*statements)

    async def _flush(self) -> None:
        """Writes whatever is pending, batch after batch, until nothing is. It stops counting
        itself in the same step as it last finds nothing pending, so a write submitted after
        that step starts a flush of its own (counting the tasks instead, whose done-callbacks run
        later, left such a write waiting for the next one)."""
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                try:
                    pool = await self._get_pool()
                    async with pool.acquire() as conn:
                        for sql, ops in batch.items():
                            await _write_ops(conn, sql, ops)
                except BaseException as exc:  # no connection: every caller of the batch hears of it
                    for ops in batch.values():
                        for op in ops:
                            if not op.future.done():
                                op.future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._flushing -= 1

    async def aclose(self) -> None:
        while self._flushes:  # the writes already accepted go out first
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await self._statements.aclose()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


@dataclass(slots=True)
class _PgOp:
    future: asyncio.Future[int]
    params: tuple[Any, ...]
    row_id: int | None  # an update's row; None for an insert


async def _write_ops(conn: Any, sql: str, ops: list[_PgOp]) -> None:
    """One statement shape for many rows: pipelined and atomic, or row by row if that fails."""
    import asyncpg

    try:
        rows = await conn.fetchmany(sql, [op.params for op in ops])
    except asyncpg.PostgresError:
        for op in ops:  # find the row at fault; the others are written
            try:
                _settle(op, await conn.fetch(sql, *op.params))
            except asyncpg.PostgresError as exc:
                if not op.future.done():
                    op.future.set_exception(exc)
        return
    if ops[0].row_id is None:  # inserts: one id each, in order
        for op, row in zip(ops, rows, strict=True):
            if not op.future.done():
                op.future.set_result(int(row[0]))
    else:
        updated = {int(row[0]) for row in rows}  # by primary key: each update changed its row or none
        for op in ops:
            if not op.future.done():
                op.future.set_result(1 if op.row_id in updated else 0)


def _settle(op: _PgOp, rows: list[Any]) -> None:
    if not op.future.done():
        op.future.set_result(int(rows[0][0]) if op.row_id is None else len(rows))


async def _keep_session(connection: Any) -> None:
    """These connections run only the two statements above and never change session state, so
    they skip asyncpg's reset query on release (``RESET ALL`` and friends: one more round trip
    per statement, measured as the largest cost of a call on PostgreSQL)."""
