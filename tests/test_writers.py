"""The execution writers' contract: every writer passes the same suite, on every database it
serves (the SQLite writer on SQLite, the PostgreSQL writer on PostgreSQL, the SQLAlchemy writer
on both; PostgreSQL when OPENTESS_TEST_POSTGRES_URL is set). Then what is particular to one
writer: two SQLite processes, the PostgreSQL writer's flushes, the registry's choice."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import DateTime, func, insert, select, update
from sqlalchemy.dialects.sqlite import pysqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import UpdateBase

from opentess.bootstrap import demo_agent_spec
from opentess.clock import utcnow
from opentess.db.engine import make_engine, migrate
from opentess.db.models import Execution, ServerInstance
from opentess.settings import Settings
from opentess.store import Store, close_store
from opentess.store.agents import AgentStore
from opentess.store.executions import STORAGE_ERRORS, ExecutionStore
from opentess.store.instances import INTERRUPTED, LOST, InstanceStore
from opentess.store.users import UserStore
from opentess.store.writers import ExecutionWriter, make_writer
from opentess.store.writers.columns import EXECUTIONS, encoders
from opentess.store.writers.engine import SqlAlchemyWriter
from opentess.store.writers.postgres import PostgresWriter
from opentess.store.writers.sqlite import SqliteWriter
from tests.support.backends import postgres_database_or_skip, postgres_url

# (database, writer): each writer on each database it serves
CASES = [("sqlite", "sqlite"), ("sqlite", "sqlalchemy"), ("postgres", "postgres"), ("postgres", "sqlalchemy")]
WRITERS: dict[str, type[ExecutionWriter]] = {
    "sqlite": SqliteWriter, "postgres": PostgresWriter, "sqlalchemy": SqlAlchemyWriter,
}  # fmt: skip


async def _migrate(settings: Settings) -> None:
    engine = make_engine(settings)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def sqlite_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("writers"))
    asyncio.run(_migrate(settings))
    return settings


@pytest.fixture(scope="module")
def postgres_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with postgres_database_or_skip() as url:
        settings = Settings(data_dir=tmp_path_factory.mktemp("writers"), database_url=url)
        asyncio.run(_migrate(settings))
        yield settings


@dataclass(frozen=True)
class Case:
    database: str
    kind: str
    settings: Settings  # a migrated database the module's tests share (each test has an agent of its own)


@pytest.fixture(params=CASES, ids=[f"{kind}-writer-on-{database}" for database, kind in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    database, kind = request.param
    return Case(database, kind, request.getfixturevalue(f"{database}_settings"))


@contextmanager
def fresh_database(case: Case, tmp_path: Path) -> Iterator[Case]:
    """The case on an empty migrated database of its own, for tests that count every row."""
    if case.database == "sqlite":
        settings = Settings(data_dir=tmp_path / "fresh")
        asyncio.run(_migrate(settings))
        yield Case(case.database, case.kind, settings)
        return
    with postgres_database_or_skip() as url:
        settings = Settings(data_dir=tmp_path, database_url=url)
        asyncio.run(_migrate(settings))
        yield Case(case.database, case.kind, settings)


class Recording(ExecutionWriter):
    """The writer under test, noting which of its methods the stores call."""

    def __init__(self, inner: ExecutionWriter) -> None:
        super().__init__(inner.engine, inner.options)
        self.inner = inner
        self.calls: list[str] = []

    async def insert(self, values: dict[str, Any]) -> int:
        self.calls.append("insert")
        return await self.inner.insert(values)

    async def update(self, execution_id: int, values: dict[str, Any]) -> int:
        self.calls.append("update")
        return await self.inner.update(execution_id, values)

    async def execute(self, *statements: UpdateBase) -> list[int]:
        self.calls.append("execute")
        return await self.inner.execute(*statements)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Opened:
    engine: AsyncEngine
    writer: ExecutionWriter  # the writer under test
    seen: Recording  # the same writer, under the stores below
    executions: ExecutionStore
    instances: InstanceStore
    workspace_id: int
    agent_id: int
    user_id: int

    def values(self, n: int, **overrides: Any) -> dict[str, Any]:
        """The columns ExecutionStore.create writes, for call ``n`` of this test's agent."""
        now = utcnow()
        return {
            "workspace_id": self.workspace_id, "agent_id": self.agent_id, "user_id": self.user_id,
            "token_id": None, "root_id": None, "source": "openai", "status": "running", "input": f"call {n}",
            "model": "m", "turns": [], "messages": [], "params": {}, "created_at": now, "updated_at": now,
            "instance_id": None, **overrides,
        }  # fmt: skip

    async def count(self, *conditions: Any) -> int:
        """This test's executions (the module's tests share the database)."""
        query = select(func.count()).select_from(Execution).where(Execution.agent_id == self.agent_id, *conditions)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())


@asynccontextmanager
async def opened(case: Case) -> AsyncIterator[Opened]:
    """The case's writer on its database, the stores on it, and a workspace and agent of the test's own."""
    engine = make_engine(case.settings)
    writer = make_writer(engine, kind=case.kind)
    seen = Recording(writer)
    try:
        user, ws = await UserStore(engine).create(f"writer-{secrets.token_hex(6)}@example.com")
        agent = await AgentStore(engine).create(demo_agent_spec(), ws.id)
        yield Opened(
            engine, writer, seen, ExecutionStore(engine, writer=seen), InstanceStore(engine, seen), ws.id, agent.id,
            user.id,
        )  # fmt: skip
    finally:
        await writer.aclose()
        await engine.dispose()


def run(case: Case, scenario: Callable[[Opened], Awaitable[None]]) -> None:
    async def main() -> None:
        async with opened(case) as db:
            assert type(db.writer) is WRITERS[case.kind]
            await scenario(db)

    asyncio.run(main())


# --- the contract ------------------------------------------------------------------------------------------


def test_json_and_datetimes_read_back_through_sqlalchemy_unchanged(case: Case) -> None:
    """Nested JSON with non-ASCII text and datetimes to the microsecond, inserted and updated by
    the writer, read back by ExecutionStore.get_full exactly; SQLAlchemy also finds the row by an
    exact datetime (on SQLite that means the same text as SQLAlchemy's own)."""
    turns = [{"role": "user", "content": "héllo ✓ 日本語 🎉", "parts": [{"n": [1, 2.5, None, True, "\u0000x"]}]}]
    params = {"fields": {"ключ": ["значение", {"deep": [[], {}, [[["z"]]]]}]}, "temperature": 0.5}
    created = datetime(2024, 2, 29, 23, 59, 59, 999_999)
    on_the_second = datetime(2024, 3, 1, 0, 0, 0)

    async def scenario(db: Opened) -> None:
        values = db.values(1, turns=turns, messages=[turns, {"m": "ß"}], params=params, created_at=created)
        execution_id = await db.writer.insert(values)
        stored = await db.executions.get_full(execution_id)
        assert {k: stored[k] for k in values} == values
        async with db.engine.connect() as conn:
            found = (await conn.execute(select(Execution.id).where(Execution.created_at == created))).scalars().all()
        assert execution_id in found

        later = {"params": {"x": ["ü", {"y": None}]}, "output": "fin ✓", "updated_at": on_the_second}
        assert await db.writer.update(execution_id, later) == 1
        stored = await db.executions.get_full(execution_id)
        assert {k: stored[k] for k in later} == later and stored["turns"] == turns
        async with db.engine.connect() as conn:
            query = select(Execution.id).where(Execution.id == execution_id, Execution.updated_at == on_the_second)
            assert (await conn.execute(query)).scalar_one() == execution_id

        # and what ExecutionStore.create and finish write themselves
        new_id, created_at = await db.executions.create(
            workspace_id=db.workspace_id, agent_id=db.agent_id, user_id=db.user_id, token_id=None, root_id=None,
            source="execute", input="¿qué?", model="m", turns=turns, messages=[], params=params,
        )  # fmt: skip
        ended_at = await db.executions.finish(new_id, status="succeeded", output="¡sí!", prompt_tokens=3, credits=0.25)
        stored = await db.executions.get_full(new_id)
        assert (stored["created_at"], stored["updated_at"], stored["turns"], stored["params"]) == (
            created_at, ended_at, turns, params,
        )  # fmt: skip
        assert (stored["output"], stored["prompt_tokens"], stored["credits"]) == ("¡sí!", 3, 0.25)

    run(case, scenario)


def test_foreign_keys_are_enforced_and_fail_only_their_caller(case: Case) -> None:
    """An execution of a workspace or agent that does not exist is refused, in a batch of
    concurrent writes that all land but that one (and an update to a missing agent likewise)."""

    async def scenario(db: Opened) -> None:
        rows = [db.values(n) for n in range(20)]
        rows[5]["agent_id"] = 10**12
        rows[11]["workspace_id"] = 10**12
        results = await asyncio.gather(*(db.writer.insert(row) for row in rows), return_exceptions=True)
        refused = {i for i, r in enumerate(results) if isinstance(r, BaseException)}
        assert refused == {5, 11}
        assert all(isinstance(results[i], STORAGE_ERRORS) for i in refused), results
        ids = [r for r in results if isinstance(r, int)]
        assert len(set(ids)) == 18 and await db.count() == 18

        outcomes = await asyncio.gather(
            *(db.writer.update(i, {"agent_id": 10**12 if n == 3 else db.agent_id}) for n, i in enumerate(ids)),
            return_exceptions=True,
        )
        assert isinstance(outcomes[3], STORAGE_ERRORS)
        assert outcomes[:3] + outcomes[4:] == [1] * 17 and await db.count() == 18

    run(case, scenario)


def test_a_refused_row_fails_only_its_caller_and_the_rest_of_its_batch_is_written(case: Case) -> None:
    """200 concurrent creates through the store (batched on PostgreSQL, group-committed on SQLite),
    one of them refused (NOT NULL): only its caller fails; then 199 finishes and one refused
    update, likewise."""

    async def scenario(db: Opened) -> None:
        async def create(n: int) -> int:
            model: Any = None if n == 57 else "m"  # NOT NULL: refused by the database
            execution_id, _ = await db.executions.create(
                workspace_id=db.workspace_id, agent_id=db.agent_id, user_id=db.user_id, token_id=None, root_id=None,
                source="openai", input=f"call {n}", model=model, turns=[], messages=[{"n": n}], params={},
            )  # fmt: skip
            return execution_id

        results = await asyncio.gather(*(create(n) for n in range(200)), return_exceptions=True)
        assert isinstance(results[57], STORAGE_ERRORS)
        ids = [r for i, r in enumerate(results) if i != 57]
        assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 199
        ends = await asyncio.gather(
            *(db.executions.finish(i, status="succeeded", output=f"out {i}") for i in ids),  # type: ignore[arg-type]
            db.writer.update(ids[0], {"status": None}),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        assert isinstance(ends[-1], STORAGE_ERRORS) and all(isinstance(e, datetime) for e in ends[:-1])
        assert not db.executions.unstored_ids()
        for n, execution_id in ((0, ids[0]), (199, ids[-1])):
            stored = await db.executions.get(execution_id)  # type: ignore[arg-type]
            assert (stored.input, stored.status, stored.output) == (f"call {n}", "succeeded", f"out {execution_id}")
        assert await db.count() == await db.count(Execution.status == "succeeded") == 199

    run(case, scenario)


def test_concurrent_writes_each_get_their_own_id_and_row_count(case: Case) -> None:
    """Hundreds of inserts at once each get an id of their own; then hundreds of updates at once
    (some of missing ids, two of the same row) each get their own row count, and every row holds
    its own values."""

    async def scenario(db: Opened) -> None:
        ids = await asyncio.gather(*(db.writer.insert(db.values(n)) for n in range(300)))
        assert len(set(ids)) == 300
        missing = [10**12 + n for n in range(5)]
        counts = await asyncio.gather(
            *(db.writer.update(i, {"output": f"out {n}", "prompt_tokens": n}) for n, i in enumerate(ids)),
            *(db.writer.update(i, {"output": "none"}) for i in missing),
            db.writer.update(ids[7], {"completion_tokens": 7}),
        )
        assert counts == [1] * 300 + [0] * 5 + [1]
        async with db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(Execution.id, Execution.input, Execution.output, Execution.prompt_tokens).where(
                        Execution.agent_id == db.agent_id
                    )
                )
            ).all()
        by_id = {row.id: row for row in rows}
        assert len(by_id) == 300
        for n, execution_id in enumerate(ids):
            row = by_id[execution_id]
            assert (row.input, row.output, row.prompt_tokens) == (f"call {n}", f"out {n}", n)

    run(case, scenario)


def test_an_update_of_a_missing_execution_changes_nothing(case: Case) -> None:
    """update() of an id that does not exist returns 0; so does a statement that matches nothing."""

    async def scenario(db: Opened) -> None:
        assert await db.writer.update(10**12, {"status": "failed"}) == 0
        assert await db.writer.execute(update(Execution).where(Execution.id == 10**12).values(status="failed")) == [0]
        await db.executions.set_status(10**12, "running")  # nothing to change, and no error

    run(case, scenario)


def test_set_status_and_the_ends_of_runs_go_through_the_writer(case: Case) -> None:
    """create, set_status and finish are writes of the writer, and their effect is visible."""

    async def scenario(db: Opened) -> None:
        execution_id, created = await db.executions.create(
            workspace_id=db.workspace_id, agent_id=db.agent_id, user_id=None, token_id=None, root_id=None,
            source="openai", input="x", model="m", turns=[], messages=[], params={}, status="starting",
        )  # fmt: skip
        assert (await db.executions.get(execution_id)).status == "starting"
        await db.executions.set_status(execution_id, "running")
        running = await db.executions.get(execution_id)
        assert running.status == "running" and running.updated_at >= created
        await db.executions.finish(execution_id, status="cancelled", output=None, error="stopped")
        ended = await db.executions.get(execution_id)
        assert (ended.status, ended.error) == ("cancelled", "stopped")
        assert db.seen.calls == ["insert", "update", "update"]

    run(case, scenario)


def test_the_reaper_and_the_instance_writes_go_through_the_writer(case: Case, tmp_path: Path) -> None:
    """reap, fail_lost, register, heartbeat and unregister are statements the writer runs, and
    they do what they say: a dead local process's and a silent one's runs are failed, a live
    one's are kept, and of the live one's only the old runs no run drives are failed as lost."""

    async def scenario(db: Opened) -> None:
        instances, now = db.instances, utcnow()
        await instances.register("live")
        async with db.engine.begin() as conn:  # two other processes: one dead here, one silent elsewhere
            await conn.execute(
                insert(ServerInstance),
                [
                    {"id": "dead-local", "hostname": instances.hostname, "pid": 2**22 + 12345, "started_at": now,
                     "heartbeat_at": now},
                    {"id": "silent-remote", "hostname": "elsewhere", "pid": 1, "started_at": now,
                     "heartbeat_at": now - timedelta(seconds=120)},
                ],
            )  # fmt: skip
        old = now - timedelta(hours=2)
        ids = {}
        for owner in ("live", "dead-local", "silent-remote"):
            ids[owner], _ = await db.executions.create(
                workspace_id=db.workspace_id, agent_id=db.agent_id, user_id=None, token_id=None, root_id=None,
                source="openai", input=owner, model="m", turns=[], messages=[], params={}, instance_id=owner,
            )  # fmt: skip
        driven_old = await db.writer.insert(db.values(1, instance_id="live", created_at=old))
        lost_old = await db.writer.insert(db.values(2, instance_id="live", created_at=old))
        db.seen.calls.clear()

        assert await instances.reap(30) == 2
        statuses = {owner: (await db.executions.get(i)).status for owner, i in ids.items()}
        assert statuses == {"live": "running", "dead-local": "failed", "silent-remote": "failed"}
        assert (await db.executions.get(ids["dead-local"])).error == INTERRUPTED
        async with db.engine.connect() as conn:
            remaining = (await conn.execute(select(ServerInstance.id))).scalars().all()
        assert remaining == ["live"]

        assert await instances.fail_lost("live", {driven_old}, older_than_s=3600) == 1
        lost = await db.executions.get(lost_old)
        assert (lost.status, lost.error) == ("failed", LOST)
        assert (await db.executions.get(driven_old)).status == "running"
        assert (await db.executions.get(ids["live"])).status == "running"  # too recent to be lost

        await instances.heartbeat("live")
        await instances.heartbeat("dead-local")  # reaped while alive: it comes back
        async with db.engine.connect() as conn:
            assert sorted((await conn.execute(select(ServerInstance.id))).scalars()) == ["dead-local", "live"]
        await instances.unregister("dead-local")
        await instances.unregister("live")
        # reap, fail_lost, two heartbeats and a re-register, two unregisters: all on the writer
        assert db.seen.calls == ["execute"] * 7

    with fresh_database(case, tmp_path) as fresh:  # the reaper fails every active run of the database
        run(fresh, scenario)


def test_statements_are_all_or_nothing_and_fail_only_their_caller(case: Case) -> None:
    """execute() runs its statements in one transaction: when one is refused none is kept, and
    the writes submitted with it are written."""

    async def scenario(db: Opened) -> None:
        first, second = await asyncio.gather(db.writer.insert(db.values(1)), db.writer.insert(db.values(2)))
        results = await asyncio.gather(
            db.writer.execute(
                update(Execution).where(Execution.id == first).values(output="kept?"),
                update(Execution).where(Execution.id == second).values(status=None),  # NOT NULL
            ),
            *(db.writer.insert(db.values(n)) for n in range(3, 8)),
            db.writer.execute(update(Execution).where(Execution.id == second).values(output="yes")),
            return_exceptions=True,
        )
        assert isinstance(results[0], STORAGE_ERRORS)
        assert all(isinstance(r, int) for r in results[1:6]) and results[6] == [1]
        assert (await db.executions.get(first)).output is None
        assert (await db.executions.get(second)).output == "yes"
        assert await db.count() == 7

    run(case, scenario)


def test_aclose_waits_for_the_writes_already_accepted(case: Case) -> None:
    """Writes under way when aclose is called are all stored by the time it returns."""

    async def scenario(db: Opened) -> None:
        first = await db.writer.insert(db.values(0))
        tasks = [asyncio.ensure_future(db.writer.insert(db.values(n))) for n in range(1, 101)]
        tasks.append(asyncio.ensure_future(db.writer.update(first, {"output": "last words"})))
        await asyncio.sleep(0)  # every write has been handed to the writer
        await db.writer.aclose()
        assert await db.count() == 101
        assert await db.count(Execution.output == "last words") == 1
        results = await asyncio.gather(*tasks)
        assert len(set(results[:-1])) == 100 and results[-1] == 1

    run(case, scenario)


def test_a_database_that_cannot_be_reached_fails_each_caller(case: Case, tmp_path: Path) -> None:
    """Every write to a database that cannot be opened fails with a storage error (what finish()
    retries and keeps), none hangs; on SQLite, the same writer writes once the file can be opened."""
    path = tmp_path / "not-yet" / "opentess.db"
    url = {
        "sqlite": f"sqlite+aiosqlite:///{path}",
        "postgres": "postgresql+asyncpg://opentess@127.0.0.1:1/nowhere",  # port 1: nothing listens
    }[case.database]

    async def scenario() -> None:
        engine = create_async_engine(url)
        writer = make_writer(engine, kind=case.kind)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(
                    writer.insert({"status": "running"}),
                    writer.update(1, {"status": "failed"}),
                    writer.execute(update(Execution).values(status="failed")),
                    return_exceptions=True,
                ),
                60,
            )
            assert all(isinstance(r, STORAGE_ERRORS) for r in results), results
            if case.database == "sqlite":
                settings = Settings(data_dir=path.parent)
                await _migrate(settings)
                store = Store(make_engine(settings))
                try:
                    _, ws = await store.users.create("late@example.com")
                    agent = await store.agents.create(demo_agent_spec(), ws.id)
                finally:
                    await close_store(store)
                assert await writer.insert(_execution_values(1, ws.id, agent.id)) > 0
        finally:
            await writer.aclose()
            await engine.dispose()

    if case.database == "postgres" and postgres_url() is None:
        pytest.skip("PostgreSQL tests need OPENTESS_TEST_POSTGRES_URL")
    asyncio.run(scenario())


# --- one writer, one database ------------------------------------------------------------------------------


def test_the_registry_gives_each_database_its_writer(tmp_path: Path) -> None:
    """A SQLite file gets the SQLite writer, PostgreSQL through asyncpg the PostgreSQL writer, and
    what neither serves (an in-memory SQLite database) the SQLAlchemy writer; a writer can also
    be asked for by name, but not for a database it cannot write."""

    async def scenario() -> None:
        engines = {
            "file": create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"),
            "memory": create_async_engine("sqlite+aiosqlite:///:memory:"),
            "postgres": create_async_engine("postgresql+asyncpg://u@127.0.0.1/db"),
        }
        try:
            chosen = {name: make_writer(engine) for name, engine in engines.items()}
            assert {name: type(w) for name, w in chosen.items()} == {
                "file": SqliteWriter, "memory": SqlAlchemyWriter, "postgres": PostgresWriter,
            }  # fmt: skip
            assert isinstance(make_writer(engines["file"], kind="sqlalchemy"), SqlAlchemyWriter)
            with pytest.raises(ValueError, match="SQLite database file"):
                make_writer(engines["memory"], kind="sqlite")
            with pytest.raises(ValueError, match="asyncpg"):
                make_writer(engines["file"], kind="postgres")
            for writer in chosen.values():
                await writer.aclose()
        finally:
            for engine in engines.values():
                await engine.dispose()

    asyncio.run(scenario())


def test_an_in_memory_sqlite_database_is_written_through_sqlalchemy(tmp_path: Path) -> None:
    """The configuration no direct writer serves still stores and ends executions."""

    async def scenario() -> tuple[str, str | None, str]:
        engine = make_engine(Settings(data_dir=tmp_path, database_url="sqlite+aiosqlite:///:memory:"))
        store = Store(engine)
        try:
            assert isinstance(store.executions.writer, SqlAlchemyWriter)
            await migrate(engine)
            user, ws = await store.users.create("memory@example.com")
            agent = await store.agents.create(demo_agent_spec(), ws.id)
            execution_id, _ = await store.executions.create(
                workspace_id=ws.id, agent_id=agent.id, user_id=user.id, token_id=None, root_id=None,
                source="openai", input="hi", model="m", turns=[{"role": "user", "content": "hi"}], messages=[],
                params={}, status="starting",
            )  # fmt: skip
            await store.executions.set_status(execution_id, "running")
            await store.executions.finish(execution_id, status="succeeded", output="hello")
            stored = await store.executions.get_full(execution_id)
            return stored["status"], stored["output"], stored["turns"][0]["content"]
        finally:
            await close_store(store)

    assert asyncio.run(scenario()) == ("succeeded", "hello", "hi")


def test_sqlite_datetimes_are_written_as_sqlalchemy_writes_them() -> None:
    """The SQLite writers' text for every DateTime column of the table is SQLAlchemy's own."""
    dialect = pysqlite.dialect()
    found = encoders(EXECUTIONS, "sqlite")
    columns = [c.name for c in EXECUTIONS.columns if isinstance(c.type, DateTime)]
    assert columns and set(columns) <= set(found)
    for name in columns:
        alchemy = EXECUTIONS.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        assert alchemy is not None
        for value in (datetime(2024, 1, 2, 3, 4, 5, 6), datetime(2024, 1, 2, 3, 4, 5), None):
            assert found[name](value) == alchemy(value)


def _execution_values(n: int, workspace_id: int = 1, agent_id: int = 1) -> dict[str, Any]:
    now = utcnow()
    return {
        "workspace_id": workspace_id, "agent_id": agent_id, "user_id": None, "token_id": None, "root_id": None,
        "source": "openai", "status": "running", "input": f"call {n}", "model": "m", "turns": [], "messages": [],
        "params": {}, "created_at": now, "updated_at": now, "instance_id": None,
    }  # fmt: skip


def test_sqlite_writers_of_two_processes_wait_for_each_other(tmp_path: Path) -> None:
    """Two workers on one SQLite file: a write transaction held elsewhere is waited for (no
    'database is locked'), and every write of both lands."""
    settings = Settings(data_dir=tmp_path)

    async def prepare() -> tuple[int, int]:
        engine = make_engine(settings)
        store = Store(engine)
        try:
            await migrate(engine)
            _, ws = await store.users.create("writers@example.com")
            return ws.id, (await store.agents.create(demo_agent_spec(), ws.id)).id
        finally:
            await close_store(store)

    workspace_id, agent_id = asyncio.run(prepare())
    path = str(tmp_path / "opentess.db")
    assert Path(path).exists()

    def worker(offset: int, ids: list[int]) -> None:
        async def main() -> None:
            engine = make_engine(settings)
            writer = SqliteWriter(engine)
            try:
                rows = (_execution_values(offset + i, workspace_id, agent_id) for i in range(150))
                ids.extend(await asyncio.gather(*(writer.insert(row) for row in rows)))
                for execution_id in ids[:50]:
                    assert await writer.update(execution_id, {"status": "succeeded"}) == 1
            finally:
                await writer.aclose()
                await engine.dispose()

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


def test_a_write_submitted_as_the_postgres_flushes_end_is_still_written() -> None:
    """A write that arrives after every flush of the PostgreSQL writer has found nothing more to
    write, but before asyncio has run their done-callbacks, must start a flush of its own. (It
    once waited for the next write instead: with every client waiting on its own write there was
    none, and the server hung.) A connection that answers without suspending makes the order exact."""

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
        engine = create_async_engine("postgresql+asyncpg://unused@127.0.0.1/unused")  # never connected
        writer = PostgresWriter(engine)
        writer._pool = Pool()

        async def late() -> int:
            await asyncio.sleep(0)  # runs after both flushes have begun and ended
            return await writer.insert({"status": "running"})

        try:
            return list(
                await asyncio.wait_for(
                    asyncio.gather(writer.insert({"status": "running"}), writer.insert({"status": "running"}), late()),
                    5,
                )
            )
        finally:
            await writer.aclose()
            await engine.dispose()

    assert asyncio.run(scenario()) == [1, 2, 1]
