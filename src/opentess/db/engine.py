"""Engine creation and schema-version checks."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from opentess.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(settings: Settings) -> AsyncEngine:
    url = settings.resolved_database_url
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        if settings.is_embedded_sqlite:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": settings.db_busy_timeout_s}
    else:
        kwargs["pool_size"] = settings.db_pool_size
        kwargs["max_overflow"] = settings.db_pool_size
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; NORMAL sync is durable across process crashes
    # (not power loss) in WAL mode, at a fraction of FULL's fsync cost.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _revision_name(heads: Sequence[str]) -> str | None:
    """One name for a set of heads: capabilities may add migrations on branches of their own,
    each applied; the schema is current when every branch is at its head."""
    return "+".join(sorted(heads)) or None


@cache
def head_revision() -> str | None:
    """The newest migrations shipped with this code (read from disk once per process)."""
    return _revision_name(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def _current_revision(conn: Connection) -> str | None:
    return _revision_name(MigrationContext.configure(conn).get_current_heads())


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current_revision)


def _upgrade(conn: Connection, url: str) -> None:
    from alembic import command

    cfg = alembic_config(url)
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "heads")


async def migrate(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """Apply every pending migration; returns (revision before, revision after)."""
    url = engine.url.render_as_string(hide_password=False)
    before = await current_revision(engine)
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, url)
    return before, await current_revision(engine)


async def pending_migrations(engine: AsyncEngine) -> bool:
    return await current_revision(engine) != head_revision()
