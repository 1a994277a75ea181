"""The SQLite writer: one thread with its own sqlite3 connection writes everything of ours.

SQLite has one writer at a time anyway. Under load the thread commits every write waiting for it
in one transaction (group commit): one thread wake-up and one WAL commit for many calls instead of
one each. A call returns only once its transaction has committed. The reaper's statements
(``execute``) go through the same thread, so they never fight the group commit for the lock."""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import UpdateBase

from opentess.store.writers.base import ExecutionWriter, WriterOptions, register_writer
from opentess.store.writers.columns import EXECUTIONS, Statements

MAX_BATCH = 512


def _serves(url: URL) -> bool:
    # an in-memory database exists only on the engine's own connection: not for a thread of ours
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")


@register_writer("sqlite", serves=_serves)
class SqliteWriter(ExecutionWriter):
    def __init__(self, engine: AsyncEngine, options: WriterOptions = WriterOptions()) -> None:
        super().__init__(engine, options)
        if not _serves(engine.url):
            raise ValueError(f"the SQLite writer needs a SQLite database file, not {engine.url!r}")
        self._path = str(engine.url.database)
        self._sql = Statements(EXECUTIONS, "sqlite", lambda _: "?")
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop: Callable[[], object] = lambda: None

    def _start(self) -> None:
        # A queue per thread: a thread started while another is closing never takes its end mark.
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=_serve, args=(self._queue, self._path, self.options.lock_wait_s),
            name="opentess-sqlite-writer", daemon=True,
        )  # fmt: skip
        self._thread.start()
        # the thread holds no reference to the writer: one dropped without aclose (a CLI command's
        # store) still ends its thread and closes its connection when it is collected
        self._stop = weakref.finalize(self, self._queue.put, None)

    def _submit(self, op: _Op) -> asyncio.Future[Any]:
        if self._thread is None:
            self._start()
        self._queue.put(op)
        return op.future

    def _op(self, sql: str, params: list[Any], want_rowid: bool, statements: tuple[UpdateBase, ...] | None) -> _Op:
        loop = asyncio.get_running_loop()
        return _Op(loop, loop.create_future(), sql, params, want_rowid, statements)

    async def insert(self, values: dict[str, Any]) -> int:
        shape = self._sql.insert(values)
        result: int = await self._submit(self._op(shape.sql, shape.params(values), True, None))
        return result

    async def update(self, execution_id: int, values: dict[str, Any]) -> int:
        shape = self._sql.update(values)
        params = shape.params(values)
        params.append(execution_id)
        result: int = await self._submit(self._op(shape.sql, params, False, None))
        return result

    async def execute(self, *statements: UpdateBase) -> list[int]:
        result: list[int] = await self._submit(self._op("", [], False, statements))
        return result

    async def aclose(self) -> None:
        while self._thread is not None:  # a write accepted while closing started a thread: close it too
            thread, stop = self._thread, self._stop
            self._thread = None
            stop()  # the end mark goes in after every write already accepted
            await asyncio.get_running_loop().run_in_executor(None, thread.join)


@dataclass(slots=True)
class _Op:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    sql: str
    params: list[Any]
    want_rowid: bool
    statements: tuple[UpdateBase, ...] | None  # SQLAlchemy statements instead of sql
    result: Any = 0


def _serve(ops: queue.SimpleQueue[_Op | None], path: str, lock_wait_s: float) -> None:
    """The writer thread: batches of what is waiting, one transaction each, until the end mark."""
    link: _Link | None = None
    try:
        while True:
            first = ops.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    op = ops.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    stop = True
                    break
                batch.append(op)
            try:
                if link is None:
                    link = _Link(path, lock_wait_s)
            except Exception as exc:  # the file cannot be opened: these callers hear it, the next batch tries again
                for op in batch:
                    op.result = exc
                _wake(batch)
            else:
                _write_batch(link, batch)
            if stop:
                return
    finally:
        if link is not None:
            link.close()


class _Link:
    """The thread's connection, and SQLAlchemy over it for the statements of ``execute``."""

    def __init__(self, path: str, lock_wait_s: float) -> None:
        self.lock_wait_s = lock_wait_s
        self.conn = conn = sqlite3.connect(path, isolation_level=None, timeout=lock_wait_s, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")  # as on the engine's connections
            conn.execute(f"PRAGMA busy_timeout={int(lock_wait_s * 1000)}")  # statements; BEGIN waits in _begin
            # made now, outside any transaction: SQLAlchemy rolls back a connection it sees for the first time
            self.engine = create_engine("sqlite://", creator=lambda: conn, poolclass=StaticPool)
            self.alchemy = self.engine.connect()
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        self.alchemy.close()
        self.engine.dispose()
        self.conn.close()


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


def _run_statements(link: _Link, statements: tuple[UpdateBase, ...]) -> list[int]:
    """SQLAlchemy statements inside the batch's transaction; a savepoint makes them all or nothing
    without taking the rest of the batch down with them. (SQLAlchemy's own transaction on this
    connection is never committed or rolled back: the batch's BEGIN and COMMIT are the real ones.)"""
    conn = link.conn
    conn.execute("SAVEPOINT writer_statements")
    try:
        counts = [int(link.alchemy.execute(statement).rowcount) for statement in statements]
    except BaseException:
        conn.execute("ROLLBACK TO writer_statements")
        conn.execute("RELEASE writer_statements")
        raise
    conn.execute("RELEASE writer_statements")
    return counts


def _write_batch(link: _Link, batch: list[_Op]) -> None:
    """Runs in the writer thread: one transaction for the whole batch, then wake the callers."""
    conn = link.conn
    try:
        _begin(conn, link.lock_wait_s)
        for op in batch:
            try:
                if op.statements is not None:
                    op.result = _run_statements(link, op.statements)
                else:
                    cursor = conn.execute(op.sql, op.params)
                    op.result = int(cursor.lastrowid or 0) if op.want_rowid else cursor.rowcount
            except Exception as exc:  # this write only: its caller gets the error, the others still commit
                op.result = exc
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        for op in batch:
            op.result = exc
    _wake(batch)


def _wake(batch: list[_Op]) -> None:
    """Hand each caller its outcome, on its own event loop."""
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
