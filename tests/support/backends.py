"""Test databases and Redis: the suite runs on SQLite always, and on PostgreSQL / Redis when
OPENTESS_TEST_POSTGRES_URL / OPENTESS_TEST_REDIS_URL are given (CI gives them). Each run gets a
database and a Redis key prefix of its own, so runs never collide."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url

POSTGRES_ENV = "OPENTESS_TEST_POSTGRES_URL"
REDIS_ENV = "OPENTESS_TEST_REDIS_URL"


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def redis_url() -> str | None:
    return os.environ.get(REDIS_ENV) or None


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    admin = make_url(url).set(drivername="postgresql")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def terminate_connections(url: str) -> int:
    """End every connection to ``url``'s database but this one, as a restart of the database
    server does, and wait until their processes have exited; how many were ended."""

    async def terminate() -> int:
        import asyncpg

        conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
        try:
            sql = ("SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                   "WHERE datname = current_database() AND pid <> pg_backend_pid()")  # fmt: skip
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()

    return asyncio.run(terminate())


@contextmanager
def fresh_postgres_database(url: str) -> Iterator[str]:
    """A new, empty database on the server of ``url``; dropped afterwards."""
    name = f"opentess_test_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def postgres_database_or_skip() -> Iterator[str]:
    """A fresh PostgreSQL database, or the test is reported skipped with the variable it needs."""
    import pytest

    url = postgres_url()
    if url is None:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}")
    with fresh_postgres_database(url) as fresh:
        yield fresh
