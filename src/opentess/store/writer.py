"""The two writes of every execution (create, finish) on the driver directly.

SQLAlchemy's statement building and its async adaptation cost about a millisecond per statement;
these two statements run on every call, so they go straight to aiosqlite (one autocommit
connection: SQLite has one writer anyway) or to an asyncpg pool, with SQL prepared once. Reads
and everything else stay on SQLAlchemy. The schema is the same: rows written here read back
through SQLAlchemy unchanged (tests/test_database.py checks both backends)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy.engine import URL

JSON_COLUMNS = frozenset({"turns", "messages", "params"})


class ExecutionWriter(Protocol):
    async def insert(self, values: dict[str, Any]) -> int: ...

    async def update(self, execution_id: int, values: dict[str, Any]) -> int: ...

    async def aclose(self) -> None: ...


def _sqlite_value(key: str, value: Any) -> Any:
    if key in JSON_COLUMNS:
        return orjson.dumps(value).decode()
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DateTime format
    return value


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
    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path
        self._conn: Any = None

    def _placeholder(self, position: int) -> str:
        return "?"

    async def _connection(self) -> Any:
        if self._conn is None:
            async with self._lock:
                if self._conn is None:
                    import aiosqlite

                    conn = await aiosqlite.connect(self._path, isolation_level=None, timeout=30)
                    await conn.execute("PRAGMA journal_mode=WAL")
                    await conn.execute("PRAGMA synchronous=NORMAL")
                    await conn.execute("PRAGMA busy_timeout=30000")
                    self._conn = conn
        return self._conn

    async def insert(self, values: dict[str, Any]) -> int:
        conn = await self._connection()
        params = [_sqlite_value(k, v) for k, v in values.items()]
        cursor = await conn.execute(self._insert_sql(tuple(values)), params)
        new_id = int(cursor.lastrowid)
        await cursor.close()
        return new_id

    async def update(self, execution_id: int, values: dict[str, Any]) -> int:
        conn = await self._connection()
        params = [*(_sqlite_value(k, v) for k, v in values.items()), execution_id]
        cursor = await conn.execute(self._update_sql(tuple(values)), params)
        count = int(cursor.rowcount)
        await cursor.close()
        return count

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class PostgresWriter(_SqlWriter):
    def __init__(self, dsn: str, pool_size: int) -> None:
        super().__init__()
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: Any = None

    def _placeholder(self, position: int) -> str:
        return f"${position}"

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._pool_size)
        return self._pool

    async def insert(self, values: dict[str, Any]) -> int:
        pool = await self._get_pool()
        params = [_pg_value(k, v) for k, v in values.items()]
        return int(await pool.fetchval(self._insert_sql(tuple(values)) + " RETURNING id", *params))

    async def update(self, execution_id: int, values: dict[str, Any]) -> int:
        pool = await self._get_pool()
        params = [*(_pg_value(k, v) for k, v in values.items()), execution_id]
        status = await pool.execute(self._update_sql(tuple(values)), *params)
        return int(str(status).rsplit(" ", 1)[-1])

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def make_writer(url: URL, pool_size: int) -> ExecutionWriter | None:
    """A direct writer for the engine's database, or None to write through SQLAlchemy."""
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return SqliteWriter(url.database)
    if url.get_backend_name() == "postgresql" and url.get_driver_name() == "asyncpg":
        return PostgresWriter(url.set(drivername="postgresql").render_as_string(hide_password=False), pool_size)
    return None
