"""The two writes of every execution (create, finish) on the driver directly.

SQLAlchemy's statement building and its async adaptation cost about a millisecond per statement;
these two statements run on every call, so they go straight to sqlite3 (one writer thread with
group commit: SQLite has one writer anyway) or to an asyncpg pool, with SQL prepared once. Reads
and everything else stay on SQLAlchemy. The schema is the same: rows written here read back
through SQLAlchemy unchanged (tests/test_database.py checks both backends)."""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy.engine import URL

JSON_COLUMNS = frozenset({"turns", "messages", "params"})


class ExecutionWriter(Protocol):
    async def insert(self, values: dict[str, Any]) -> int: ...

    async def update(self, execution_id: int, values: dict[str, Any]) -> int: ...

    async def aclose(self) -> None: ...


_LAYOUTS: dict[tuple[str, ...], tuple[tuple[int, ...], tuple[int, ...]]] = {}


def _sqlite_params(keys: tuple[str, ...], values: dict[str, Any]) -> list[Any]:
    """Column values as sqlite3 takes them: JSON text, and datetimes (the ``*_at`` columns) in
    SQLAlchemy's SQLite format. Which positions need which is worked out once per column set."""
    layout = _LAYOUTS.get(keys)
    if layout is None:
        layout = _LAYOUTS[keys] = (
            tuple(i for i, k in enumerate(keys) if k in JSON_COLUMNS),
            tuple(i for i, k in enumerate(keys) if k.endswith("_at")),
        )
    params = list(values.values())
    for i in layout[0]:
        params[i] = orjson.dumps(params[i]).decode()
    for i in layout[1]:
        value = params[i]
        if isinstance(value, datetime):
            params[i] = value.isoformat(" ", "microseconds")  # = strftime("%Y-%m-%d %H:%M:%S.%f"), faster
    return params


def _pg_value(key: str, value: Any) -> Any:
    return orjson.dumps(value).decode() if key in JSON_COLUMNS else value


class _SqlWriter:
    """SQL built once per column set; subclasses run it on their driver."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._sql: dict[tuple[str, ...], str] = {}

    def _placeholder(self, position: int) -> str:
        raise NotImplementedError

    def _insert_sql(self, keys: tuple[str, ...]) -> str:
        sql = self._sql.get(keys)
        if sql is None:
            marks = ", ".join(self._placeholder(i) for i in range(1, len(keys) + 1))
            sql = self._sql[keys] = f"INSERT INTO executions ({', '.join(keys)}) VALUES ({marks})"
        return sql

    def _update_sql(self, keys: tuple[str, ...]) -> str:
        cache_key = ("update", *keys)
        sql = self._sql.get(cache_key)
        if sql is None:
            sets = ", ".join(f"{k} = {self._placeholder(i)}" for i, k in enumerate(keys, start=1))
            sql = self._sql[cache_key] = f"UPDATE executions SET {sets} WHERE id = {self._placeholder(len(keys) + 1)}"
        return sql


class SqliteWriter(_SqlWriter):
    """One writer thread with its own sqlite3 connection. Under load it commits every write that
    is waiting in one transaction (group commit): one thread wake-up and one WAL commit for many
    calls, instead of one each. A call returns only once its transaction has committed."""

    def __init__(self, path: str, lock_wait_s: float = 30.0) -> None:
        super().__init__()
        self._path = path
        self._lock_wait_s = lock_wait_s
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _placeholder(self, position: int) -> str:
        return "?"

    def _submit(self, sql: str, params: list[Any], want_rowid: bool) -> asyncio.Future[int]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="opentess-sqlite-writer", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put(_Op(loop, future, sql, params, want_rowid))
        return future

    async def insert(self, values: dict[str, Any]) -> int:
        keys = tuple(values)
        return await self._submit(self._insert_sql(keys), _sqlite_params(keys, values), True)

    async def update(self, execution_id: int, values: dict[str, Any]) -> int:
        keys = tuple(values)
        params = _sqlite_params(keys, values)
        params.append(execution_id)
        return await self._submit(self._update_sql(keys), params, False)

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=self._lock_wait_s, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")  # as on the engine's connections
        busy_ms = int(self._lock_wait_s * 1000)
        conn.execute(f"PRAGMA busy_timeout={busy_ms}")  # statements; BEGIN waits in _begin
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < 512:
                    try:
                        op = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if op is None:
                        stop = True
                        break
                    batch.append(op)
                _write_batch(conn, batch, self._lock_wait_s)
                if stop:
                    return
        finally:
            conn.close()

    async def aclose(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None


@dataclass(slots=True)
class _Op:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[int]
    sql: str
    params: list[Any]
    want_rowid: bool
    result: int | BaseException = 0


def _begin(conn: sqlite3.Connection, lock_wait_s: float) -> None:
    """BEGIN IMMEDIATE, waiting for another process's write transaction to end. SQLite's own busy
    handler sleeps 1, 2, 5, 10… ms between tries; another opentess worker's batch is done in a
    fraction of a millisecond, so this polls every 0.2 ms (measured with two workers)."""
    deadline = time.monotonic() + lock_wait_s
    conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.0002)
    finally:  # the statements of the transaction keep SQLite's own wait
        conn.execute(f"PRAGMA busy_timeout={int(lock_wait_s * 1000)}")


def _write_batch(conn: sqlite3.Connection, batch: list[_Op], lock_wait_s: float) -> None:
    """Runs in the writer thread: one transaction for the whole batch, then wake the callers."""
    try:
        _begin(conn, lock_wait_s)
        for op in batch:
            try:
                cursor = conn.execute(op.sql, op.params)
                op.result = int(cursor.lastrowid or 0) if op.want_rowid else cursor.rowcount
            except sqlite3.Error as exc:  # this statement only; the others still commit
                op.result = exc
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        for op in batch:
            op.result = exc
    by_loop: dict[asyncio.AbstractEventLoop, list[_Op]] = {}
    for op in batch:
        by_loop.setdefault(op.loop, []).append(op)
    for loop, ops in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, ops)
        except RuntimeError:  # that loop is closed: nobody waits any more
            pass


def _resolve(ops: list[_Op]) -> None:
    for op in ops:
        if op.future.done():
            continue
        if isinstance(op.result, BaseException):
            op.future.set_exception(op.result)
        else:
            op.future.set_result(op.result)


MAX_FLUSHES = 2
"""Batches a PostgreSQL writer keeps in flight at once: while one waits for the server, the next
one collects what arrives meanwhile."""


class PostgresWriter(_SqlWriter):
    """Writes from concurrent calls go out together: each batch is one pipelined ``fetchmany``
    per statement shape (parse once, bind/execute per row, one sync: one round trip and one
    commit for the whole batch, as the SQLite writer's group commit). ``fetchmany`` is atomic, so
    a batch that fails is written again row by row, and each caller gets its own row's outcome."""

    def __init__(self, dsn: str, pool_size: int) -> None:
        super().__init__()
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: Any = None
        self._pending: dict[str, list[_PgOp]] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._flushing = 0  # flushes still looping (a task stays in _flushes until its done-callback runs)

    def _placeholder(self, position: int) -> str:
        return f"${position}"

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=self._pool_size, reset=_keep_session
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
        sql = self._insert_sql(tuple(values)) + " RETURNING id"
        return await self._submit(sql, tuple([_pg_value(k, v) for k, v in values.items()]), None)

    async def update(self, execution_id: int, values: dict[str, Any]) -> int:
        sql = self._update_sql(tuple(values)) + " RETURNING id"
        params = tuple([*(_pg_value(k, v) for k, v in values.items()), execution_id])
        return await self._submit(sql, params, execution_id)

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
        updated = Counter(int(row[0]) for row in rows)
        for op in ops:
            if not op.future.done():
                op.future.set_result(updated[op.row_id or 0])


def _settle(op: _PgOp, rows: list[Any]) -> None:
    if not op.future.done():
        op.future.set_result(int(rows[0][0]) if op.row_id is None else len(rows))


async def _keep_session(connection: Any) -> None:
    """These connections run only the two statements above and never change session state, so
    they skip asyncpg's reset query on release (``RESET ALL`` and friends: one more round trip
    per statement, measured as the largest cost of a call on PostgreSQL)."""


def make_writer(url: URL, pool_size: int, lock_wait_s: float = 30.0) -> ExecutionWriter | None:
    """A direct writer for the engine's database, or None to write through SQLAlchemy."""
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return SqliteWriter(url.database, lock_wait_s)
    if url.get_backend_name() == "postgresql" and url.get_driver_name() == "asyncpg":
        return PostgresWriter(url.set(drivername="postgresql").render_as_string(hide_password=False), pool_size)
    return None
