"""Schema and start-up: migrations match the models, readiness, first start, stuck runs (the execution
writers have their own suite, tests/test_writers.py)."""

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
from opentess.db.models import Base, Execution, include_name
from opentess.settings import Settings
from opentess.store import Store, close_store
from tests.support.fake_upstream import FakeUpstream
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
                        MigrationContext.configure(c, opts={"compare_type": True, "include_name": include_name}),
                        Base.metadata,
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


def test_a_postgresql_restart_costs_no_request(tmp_path: Path, upstream: FakeUpstream) -> None:
    """Every pooled connection is ended by the database server (as a restart or a failover does):
    the requests that follow all succeed — reads, an execution (its write goes through the
    execution writer) and a file upload — on new connections."""
    from tests.support.backends import terminate_connections
    from tests.support.files_env import database, files_env, upload

    with database("postgres") as url, files_env(tmp_path, upstream.url, url) as env, env.client() as http:
        chat = {"language": "en", "messages": [{"role": "user", "content": "hi"}]}
        path = f"/agents/{env.world.agent_id}/openai/chat/completions"
        assert http.get("/agents").status_code == 200 and http.post(path, json=chat).status_code == 200
        assert url is not None and terminate_connections(url) > 0
        for _ in range(3):
            assert http.get("/agents").status_code == 200
            assert http.post(path, json=chat).status_code == 200
            assert upload(http, "after.txt", b"after the restart", process="true").status_code == 200
