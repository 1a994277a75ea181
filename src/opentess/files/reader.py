"""Retrieval's reads on the database driver itself, not through SQLAlchemy: a search runs on
every call of an agent with files, and each SQLAlchemy statement on aiosqlite costs several
thread hand-offs (measured: 1.6 ms a search against 0.12 ms for the same query on sqlite3).

- SQLite: sqlite3 connections of a small thread pool, one per thread, read-only; a query is one
  hop to a thread and back.
- PostgreSQL (asyncpg): a small pool of asyncpg connections.
- Anything else (another driver, an in-memory database): the engine, through SQLAlchemy.

Statements are written for the driver: ``?`` parameters on SQLite, ``$n`` on PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

READ_THREADS = 2
POOL_SIZE = 4


class Reader:
    def __init__(self, engine: AsyncEngine, busy_timeout_s: float = 30.0) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        url = engine.url
        self._sqlite_path = (
            str(url.database) if self.dialect == "sqlite" and url.database not in (None, "", ":memory:") else None
        )
        self._asyncpg = self.dialect == "postgresql" and url.get_driver_name() == "asyncpg"
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False) if self._asyncpg else ""
        self._busy_timeout_s = busy_timeout_s
        self._threads: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._pool: Any = None
        self._lock = asyncio.Lock()

    @property
    def postgres(self) -> bool:
        return self.dialect == "postgresql"

    async def fetch(
        self, sql: str, params: list[Any], setup: str | None = None, *, small: bool = False
    ) -> list[tuple[Any, ...]]:
        """The rows of one query (``setup``: a statement run first in the same transaction).
        ``small``: a query known to touch few rows, which SQLite runs on the calling thread —
        a hand-off to a thread and back costs more than such a query (a search among a few
        thousand chunks takes about 0.1 ms)."""
        if self._sqlite_path is not None and small:
            return self._sqlite_fetch(sql, params)
        if self._sqlite_path is not None:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="opentess-files-read")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, self._sqlite_fetch, sql, params)
        if self._asyncpg:
            pool = await self._get_pool()
            async with pool.acquire() as conn, conn.transaction():
                if setup:
                    await conn.execute(setup)
                return [tuple(row) for row in await conn.fetch(sql, *params)]
        return await self._sqlalchemy_fetch(sql, params, setup)

    def _sqlite_fetch(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._sqlite_path or "", timeout=self._busy_timeout_s, check_same_thread=False)
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            self._connections.append(conn)
        return conn.execute(sql, params).fetchall()

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    import asyncpg

                    # each search's statement is its own (its terms are literals): not worth caching
                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=POOL_SIZE, statement_cache_size=0
                    )
        return self._pool

    async def _sqlalchemy_fetch(self, sql: str, params: list[Any], setup: str | None) -> list[tuple[Any, ...]]:
        # ``?`` / ``$n`` become named parameters for SQLAlchemy's text()
        names: dict[str, Any] = {}
        parts = sql.split("?") if not self.postgres else None
        if parts is not None:
            rebuilt = parts[0]
            for n, part in enumerate(parts[1:]):
                rebuilt += f":p{n}" + part
                names[f"p{n}"] = params[n]
            sql = rebuilt
        else:
            for n in range(len(params), 0, -1):
                sql = sql.replace(f"${n}", f":p{n}")
                names[f"p{n}"] = params[n - 1]
        async with self.engine.begin() as conn:
            if setup:
                await conn.execute(text(setup))
            return [tuple(row) for row in (await conn.execute(text(sql), names)).all()]

    async def aclose(self) -> None:
        if self._threads is not None:
            threads, self._threads = self._threads, None
            await asyncio.get_running_loop().run_in_executor(None, threads.shutdown)
        for conn in self._connections:
            conn.close()
        self._connections = []
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
