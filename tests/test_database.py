"""Schema and start-up: migrations match the models, readiness, first start, stuck runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click import ClickException
from sqlalchemy import select

from opentess.cli.serve import _prepare
from opentess.db.engine import head_revision, make_engine, migrate
from opentess.db.models import Base, Execution
from opentess.settings import Settings
from opentess.store import Store, close_store
from tests.support.live import LiveServer

HEAD = head_revision()


def test_migrations_match_the_models(tmp_path: Path, database_url: str | None) -> None:
    """On every backend: after all migrations, the schema is exactly what the models declare."""
    settings = Settings(data_dir=tmp_path, database_url=database_url)

    async def diff() -> list[object]:
        engine = make_engine(settings)
        try:
            await migrate(engine)
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: compare_metadata(
                        MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
                    )
                )
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []


def test_first_start_seeds_once_and_ends_stuck_runs(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    banner = asyncio.run(_prepare(settings))
    assert "API token (shown once" in banner and "/agents/1/openai" in banner
    assert "client.chat.completions.create" in banner and "curl " in banner

    async def leave_a_run_stuck() -> int:
        engine = make_engine(settings)
        store = Store(engine)
        try:
            agent = (await store.agents.list_all())[0]
            new_id, _ = await store.executions.create(
                workspace_id=agent.workspace_id, agent_id=agent.id, user_id=None, token_id=None, root_id=None,
                source="openai", input="hi", model="smollm2-135m", turns=[], messages=[], params={},
            )  # fmt: skip
            return new_id
        finally:
            await close_store(store)

    stuck = asyncio.run(leave_a_run_stuck())
    again = asyncio.run(_prepare(settings))
    assert "API token" not in again and "existing data" in again
    assert "1 execution(s) interrupted" in again

    async def read() -> tuple[int, str, str]:
        engine = make_engine(settings)
        store = Store(engine)
        try:
            async with engine.connect() as conn:
                row = (await conn.execute(select(Execution.status, Execution.error).where(Execution.id == stuck))).one()
            return await store.users.count(), row.status, row.error
        finally:
            await close_store(store)

    users, status, error = asyncio.run(read())
    assert users == 1
    assert (status, error) == ("failed", "interrupted by server restart")


def test_serve_refuses_an_unmigrated_external_database(tmp_path: Path) -> None:
    """Only the embedded default migrates itself; a configured database must be migrated explicitly."""
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'external.db'}")
    with pytest.raises(ClickException, match="opentess migrate"):
        asyncio.run(_prepare(settings))


def test_readyz_reports_an_unmigrated_database(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    server = LiveServer(settings).start()
    try:
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
        resp = httpx.get(f"{server.url}/readyz")
        assert resp.status_code == 503 and resp.json()["expected"] == HEAD
        asyncio.run(_prepare(settings))
        resp = httpx.get(f"{server.url}/readyz")
        assert resp.status_code == 200 and resp.json()["migration"] == HEAD
    finally:
        server.stop()


def test_reaper_fails_only_the_runs_of_dead_processes(tmp_path: Path, database_url: str | None) -> None:
    """A live process keeps its runs; a dead local pid or a silent remote process loses them."""
    from datetime import timedelta

    from sqlalchemy import insert, update

    from opentess.clock import utcnow
    from opentess.db.models import ServerInstance

    settings = Settings(data_dir=tmp_path, database_url=database_url)

    async def scenario() -> dict[str, str]:
        engine = make_engine(settings)
        store = Store(engine)
        try:
            await migrate(engine)
            user, ws = await store.users.create(f"reaper-{tmp_path.name}@example.com")
            from opentess.bootstrap import demo_agent_spec

            agent = await store.agents.create(demo_agent_spec(), ws.id)
            await store.instances.register("live")
            now = utcnow()
            async with engine.begin() as conn:
                await conn.execute(
                    insert(ServerInstance).values(
                        id="dead-local", hostname=store.instances.hostname, pid=2**22 + 12345, started_at=now,
                        heartbeat_at=now,
                    )
                )  # fmt: skip
                await conn.execute(
                    insert(ServerInstance).values(
                        id="silent-remote", hostname="elsewhere", pid=1, started_at=now, heartbeat_at=now
                    )
                )
                await conn.execute(
                    update(ServerInstance)
                    .where(ServerInstance.id == "silent-remote")
                    .values(heartbeat_at=now - timedelta(seconds=120))
                )
            ids = {}
            for owner in ("live", "dead-local", "silent-remote"):
                ids[owner], _ = await store.executions.create(
                    workspace_id=ws.id, agent_id=agent.id, user_id=user.id, token_id=None, root_id=None,
                    source="openai", input="x", model="smollm2-135m", turns=[], messages=[], params={},
                    instance_id=owner,
                )  # fmt: skip
            assert await store.instances.reap(30) == 2
            return {owner: (await store.executions.get(i)).status for owner, i in ids.items()}
        finally:
            await close_store(store)

    assert asyncio.run(scenario()) == {"live": "running", "dead-local": "failed", "silent-remote": "failed"}


def _execution_values(n: int, workspace_id: int = 1, agent_id: int = 1) -> dict[str, object]:
    from opentess.clock import utcnow

    now = utcnow()
    return {
        "workspace_id": workspace_id, "agent_id": agent_id, "user_id": None, "token_id": None, "root_id": None,
        "source": "openai", "status": "running", "input": f"call {n}", "model": "m", "turns": [], "messages": [],
        "params": {}, "created_at": now, "updated_at": now, "instance_id": None,
    }  # fmt: skip


def test_sqlite_writers_of_two_processes_wait_for_each_other(tmp_path: Path) -> None:
    """Two workers on one SQLite file: a write transaction held elsewhere is waited for (no
    'database is locked'), and every write of both lands."""
    import sqlite3
    import threading
    import time

    from opentess.store.writer import SqliteWriter

    settings = Settings(data_dir=tmp_path)

    async def prepare() -> tuple[int, int]:
        engine = make_engine(settings)
        store = Store(engine)
        try:
            await migrate(engine)
            _, ws = await store.users.create("writers@example.com")
            from opentess.bootstrap import demo_agent_spec

            return ws.id, (await store.agents.create(demo_agent_spec(), ws.id)).id
        finally:
            await close_store(store)

    workspace_id, agent_id = asyncio.run(prepare())
    path = str(tmp_path / "opentess.db")
    assert Path(path).exists()

    def worker(offset: int, ids: list[int]) -> None:
        async def main() -> None:
            writer = SqliteWriter(path)
            try:
                rows = (_execution_values(offset + i, workspace_id, agent_id) for i in range(150))
                ids.extend(await asyncio.gather(*(writer.insert(row) for row in rows)))
                for execution_id in ids[:50]:
                    assert await writer.update(execution_id, {"status": "succeeded"}) == 1
            finally:
                await writer.aclose()

        asyncio.run(main())

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is in the middle of a write
    results: list[list[int]] = [[], []]
    threads = [threading.Thread(target=worker, args=(i * 1000, results[i])) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert results == [[], []]  # both wait…
    other.execute("COMMIT")
    for t in threads:
        t.join(30)
    other.close()
    assert len(results[0]) == len(results[1]) == 150  # …and then both write everything
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM executions").fetchone() == (300,)
        assert conn.execute("SELECT count(*) FROM executions WHERE status = 'succeeded'").fetchone() == (100,)


def test_concurrent_execution_writes_land_each_with_its_own_outcome(tmp_path: Path, database_url: str | None) -> None:
    """On every backend: many creates and finishes at once (batched on PostgreSQL, group-committed
    on SQLite) each get their own row id and row count; a row the database refuses fails only its
    own caller, and the rest of its batch is written."""
    settings = Settings(data_dir=tmp_path, database_url=database_url)

    async def scenario() -> None:
        engine = make_engine(settings)
        store = Store(engine)
        try:
            await migrate(engine)
            user, ws = await store.users.create(f"writes-{tmp_path.name}@example.com")
            from opentess.bootstrap import demo_agent_spec

            agent = await store.agents.create(demo_agent_spec(), ws.id)

            async def create(n: int) -> int:
                model = None if n == 57 else "m"  # NOT NULL: refused by the database
                execution_id, _ = await store.executions.create(
                    workspace_id=ws.id, agent_id=agent.id, user_id=user.id, token_id=None, root_id=None,
                    source="openai", input=f"call {n}", model=model, turns=[], messages=[{"n": n}], params={},
                )  # type: ignore[arg-type]  # fmt: skip
                return execution_id

            results = await asyncio.gather(*(create(n) for n in range(200)), return_exceptions=True)
            assert isinstance(results[57], Exception)
            ids = [r for i, r in enumerate(results) if i != 57]
            assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 199
            await asyncio.gather(
                *(store.executions.finish(i, status="succeeded", output=f"out {i}") for i in ids)  # type: ignore[arg-type]
            )
            for n, execution_id in ((0, ids[0]), (199, ids[-1])):
                stored = await store.executions.get(execution_id)  # type: ignore[arg-type]
                assert (stored.input, stored.status, stored.output) == (f"call {n}", "succeeded", f"out {execution_id}")
            async with engine.connect() as conn:
                query = select(Execution.status).where(Execution.agent_id == agent.id)  # the suite shares the database
                statuses = (await conn.execute(query)).scalars().all()
            assert sorted(statuses) == ["succeeded"] * 199
            if store.executions._writer is not None:
                assert await store.executions._writer.update(10**12, {"status": "failed"}) == 0
        finally:
            await close_store(store)

    asyncio.run(scenario())


def test_a_write_submitted_as_the_postgres_flushes_end_is_still_written() -> None:
    """A write that arrives after every flush of the PostgreSQL writer has found nothing more to
    write, but before asyncio has run their done-callbacks, must start a flush of its own. (It
    once waited for the next write instead: with every client waiting on its own write there was
    none, and the server hung.) A connection that answers without suspending makes the order exact."""
    from opentess.store.writer import PostgresWriter

    class Conn:
        async def fetchmany(self, sql: str, rows: list[tuple[object, ...]]) -> list[tuple[int]]:
            return [(n,) for n in range(1, len(rows) + 1)]

    class Acquired:
        async def __aenter__(self) -> Conn:
            return Conn()

        async def __aexit__(self, *exc: object) -> None:
            return None

    class Pool:
        def acquire(self) -> Acquired:
            return Acquired()

        async def close(self) -> None:
            return None

    async def scenario() -> list[int]:
        writer = PostgresWriter("postgresql://unused", 1)
        writer._pool = Pool()

        async def late() -> int:
            await asyncio.sleep(0)  # runs after both flushes have begun and ended
            return await writer.insert({"status": "running"})

        try:
            return await asyncio.wait_for(
                asyncio.gather(writer.insert({"status": "running"}), writer.insert({"status": "running"}), late()), 5
            )
        finally:
            await writer.aclose()

    assert asyncio.run(scenario()) == [1, 2, 1]
