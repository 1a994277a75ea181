"""Concurrent requests on the same rows, on SQLite and PostgreSQL: limits hold exactly, nothing
deadlocks, and a race never surfaces as a database error (each would be a 500). Each case runs
its writes at once with asyncio.gather, many rounds, and asserts on what was stored."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.agents import AgentSpec
from opentess.db.engine import make_engine, migrate
from opentess.errors import CollectionNotFound, Conflict, FileNotFound, InvalidInput
from opentess.files.store import FileStore, Quotas
from opentess.memories.store import MemoryStore
from opentess.settings import Settings
from opentess.store.agents import AgentStore
from opentess.store.users import UserStore
from opentess.webhooks.store import WebhookStore

ROUNDS = 8
_keys = itertools.count()


@asynccontextmanager
async def _engine(tmp_path: Path, database_url: str | None) -> AsyncIterator[AsyncEngine]:
    settings = Settings(data_dir=tmp_path, database_url=database_url, db_pool_size=10)
    engine = make_engine(settings)
    try:
        await migrate(engine)
        yield engine
    finally:
        await engine.dispose()


def _run(tmp_path: Path, database_url: str | None, case: Callable[[AsyncEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        async with _engine(tmp_path, database_url) as engine:
            await case(engine)

    asyncio.run(main())


async def _gather(*calls: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


def _unexpected(results: list[Any], *allowed: type[Exception]) -> list[BaseException]:
    return [r for r in results if isinstance(r, BaseException) and not isinstance(r, allowed)]


async def _new_file(files: FileStore, workspace_id: int, user_id: int) -> int:
    record = await files.create(
        workspace_id=workspace_id, user_id=user_id, filename="f.txt", size=1, content_type="text/plain",
        storage_key=f"objects/race-{next(_keys)}", process=False,
    )  # fmt: skip
    return record.id


def test_links_to_one_agent_hold_its_limit_in_any_order(tmp_path: Path, database_url: str | None) -> None:
    async def case(engine: AsyncEngine) -> None:
        user, ws = await UserStore(engine).create(f"links-{tmp_path.name}@example.com")
        agents, files = AgentStore(engine), FileStore(engine, Quotas(1000, 10**12, agent_max_files=2))
        for n in range(ROUNDS):
            agent = await agents.create(AgentSpec(title=f"limit {n}"), ws.id)
            ids = [await _new_file(files, ws.id, user.id) for _ in range(4)]
            results = await _gather(*(files.link(agent.id, [f]) for f in ids))
            assert not _unexpected(results, InvalidInput), results
            assert len(await files.agent_files(agent.id)) == 2
            # the same files in opposite orders: both succeed, each file linked once
            other = await agents.create(AgentSpec(title=f"orders {n}"), ws.id)
            a, b = ids[:2]
            assert not _unexpected(await _gather(files.link(other.id, [a, b]), files.link(other.id, [b, a])))
            assert sorted(f.id for f in await files.agent_files(other.id)) == [a, b]

    _run(tmp_path, database_url, case)


def test_a_file_deleted_while_it_is_linked(tmp_path: Path, database_url: str | None) -> None:
    async def case(engine: AsyncEngine) -> None:
        user, ws = await UserStore(engine).create(f"gone-{tmp_path.name}@example.com")
        agents, files = AgentStore(engine), FileStore(engine, Quotas(1000, 10**12, agent_max_files=100))
        for n in range(ROUNDS):
            agent = await agents.create(AgentSpec(title=f"gone {n}"), ws.id)
            file_id = await _new_file(files, ws.id, user.id)
            results = await _gather(files.link(agent.id, [file_id]), files.delete(file_id, ws.id))
            assert not _unexpected(results, FileNotFound), results
            assert await files.agent_files(agent.id) == []

    _run(tmp_path, database_url, case)


def test_a_signed_upload_registered_twice_at_once_is_one_file(tmp_path: Path, database_url: str | None) -> None:
    async def case(engine: AsyncEngine) -> None:
        user, ws = await UserStore(engine).create(f"register-{tmp_path.name}@example.com")
        files = FileStore(engine, Quotas(1000, 10**12, 100))
        for n in range(ROUNDS):
            upload = await files.create_upload(
                workspace_id=ws.id, user_id=user.id, object_path=f"uploads/race-{n}", token_hash=None,
                filename="f.txt", content_type="text/plain", size=1, ttl_s=60,
            )  # fmt: skip
            fields: dict[str, Any] = {
                "workspace_id": ws.id, "user_id": user.id, "filename": "f.txt", "size": 1,
                "content_type": "text/plain", "storage_key": upload.object_path, "process": False,
                "upload_id": upload.id,
            }  # fmt: skip
            results = await _gather(*(files.create(**fields) for _ in range(2)))
            assert not _unexpected(results), results
            assert results[0].id == results[1].id

    _run(tmp_path, database_url, case)


def test_webhooks_of_one_agent_hold_their_limit(tmp_path: Path, database_url: str | None) -> None:
    async def case(engine: AsyncEngine) -> None:
        user, ws = await UserStore(engine).create(f"hooks-{tmp_path.name}@example.com")
        agents, hooks = AgentStore(engine), WebhookStore(engine)
        for n in range(ROUNDS // 2):
            agent = await agents.create(AgentSpec(title=f"hooks {n}"), ws.id)
            hook: dict[str, Any] = {"workspace_id": ws.id, "agent_id": agent.id, "user_id": user.id, "method": "POST",
                    "status": "active", "limit": 3}  # fmt: skip
            results = await _gather(*(hooks.create(url=f"https://h.example/{i}", **hook) for i in range(6)))
            assert not _unexpected(results, Conflict), results
            assert sum(1 for r in results if not isinstance(r, BaseException)) == 3

    _run(tmp_path, database_url, case)


def test_a_memory_added_while_its_collection_is_deleted(tmp_path: Path, database_url: str | None) -> None:
    async def case(engine: AsyncEngine) -> None:
        user, _ws = await UserStore(engine).create(f"memories-{tmp_path.name}@example.com")
        memories = MemoryStore(engine)
        for n in range(ROUNDS):
            collection = await memories.create_collection(user.id, f"race {n}")
            adds = [memories.add(user.id, f"fact {i}", collection.id) for i in range(3)]
            results = await _gather(memories.delete_collection(user.id, collection.id), *adds)
            assert not _unexpected(results, InvalidInput, CollectionNotFound), results
            left, _ = await memories.memories(user.id, collection_id=None, offset=0, limit=100)
            assert all(m.collection_id != collection.id for m in left)  # none kept in a deleted collection

    _run(tmp_path, database_url, case)


def test_agents_created_at_once_with_one_title_get_their_own_slugs(tmp_path: Path, database_url: str | None) -> None:
    async def case(engine: AsyncEngine) -> None:
        _user, ws = await UserStore(engine).create(f"slugs-{tmp_path.name}@example.com")
        agents = AgentStore(engine)
        for n in range(ROUNDS // 2):
            results = await _gather(*(agents.create(AgentSpec(title=f"Support bot {n}"), ws.id) for _ in range(3)))
            assert not _unexpected(results), results
            assert len({r.slug for r in results}) == 3

    _run(tmp_path, database_url, case)


def test_a_member_added_twice_at_once(tmp_path: Path, database_url: str | None) -> None:
    async def case(engine: AsyncEngine) -> None:
        users = UserStore(engine)
        _owner, ws = await users.create(f"owner-{tmp_path.name}@example.com")
        for n in range(ROUNDS):
            member, _ = await users.create(f"member-{n}-{tmp_path.name}@example.com")
            results = await _gather(users.add_member(ws.id, member.id, "member"), users.add_member(ws.id, member.id))
            assert not _unexpected(results), results
            assert [(m.user_id, m.role) for m in await users.members(ws.id) if m.user_id == member.id] == [
                (member.id, "member")
            ]

    _run(tmp_path, database_url, case)
