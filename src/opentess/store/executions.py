"""Executions ("agent responses"): one row per call, written twice — when it starts and when it ends.

A conversation's first execution stores ``root_id`` NULL and is its own root; later turns store the
root's id. Readers see ``root_id`` filled in either way.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.clock import utcnow
from opentess.db.models import Agent, Execution
from opentess.errors import ExecutionNotFound
from opentess.store.writers import ExecutionWriter, make_writer

log = logging.getLogger("opentess.store")
ACTIVE = ("starting", "running")
# what a database that is locked, down or unreachable raises, through any of the writers
STORAGE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, SQLAlchemyError, OSError, asyncpg.PostgresError,
                                                    asyncpg.InterfaceError)  # fmt: skip
END_RETRIES_S = (1.0, 0.0)  # the end is written at once, then once more a second later
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    id: int
    workspace_id: int
    agent_id: int
    root_id: int
    source: str
    status: str
    input: str
    output: str | None
    error: str | None
    credits: float | None
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    created_at: datetime
    updated_at: datetime
    context: dict[str, Any] | None = None  # what each context source contributed
    steps: list[dict[str, Any]] | None = None  # a toolset's operations (opentess.executions.steps)
    sources: list[dict[str, Any]] | None = None  # what the answer may cite: {"index", "title", "url", "snippet"}


@dataclass(slots=True)
class Conversation:
    """What continuing a conversation needs: its root, its finished turns (the callers' messages
    and the answers, in order), the executions they come from, the custom-field values of its
    latest finished turn, and an execution of it that has not ended yet, if any."""

    root_id: int
    history: list[dict[str, Any]] = field(default_factory=list)
    execution_ids: list[int] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    running_id: int | None = None


_PUBLIC_COLUMNS = [
    # `context` is public: what the context sources used (memories, knowledge) is shown on the execution
    c
    for c in Execution.__table__.c
    if c.name not in ("turns", "messages", "params", "user_id", "token_id")
]


def _record(row: Any) -> ExecutionRecord:
    r = row._mapping
    return ExecutionRecord(
        r["id"], r["workspace_id"], r["agent_id"], r["root_id"] or r["id"], r["source"], r["status"],
        r["input"], r["output"], r["error"], r["credits"], r["model"], r["prompt_tokens"],
        r["completion_tokens"], r["finish_reason"], r["created_at"], r["updated_at"], r.get("context"),
        r.get("steps"), r.get("sources"),
    )  # fmt: skip


class ExecutionStore:
    """Executions: written through the writer seam (``opentess.store.writers``: the one for this
    database unless ``writer`` is given), read through SQLAlchemy."""

    def __init__(
        self,
        engine: AsyncEngine,
        pool_size: int = 10,
        lock_wait_s: float = 30.0,
        *,
        writer: ExecutionWriter | None = None,
    ) -> None:
        self._engine = engine
        self._writer = writer if writer is not None else make_writer(engine, pool_size, lock_wait_s)
        self._unstored: dict[int, dict[str, Any]] = {}

    @property
    def writer(self) -> ExecutionWriter:
        return self._writer

    async def aclose(self) -> None:
        await self._writer.aclose()

    async def create(
        self,
        *,
        workspace_id: int,
        agent_id: int,
        user_id: int | None,
        token_id: int | None,
        root_id: int | None,
        source: str,
        input: str,
        model: str,
        turns: list[dict[str, Any]],
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        context: dict[str, Any] | None = None,
        status: str = "running",
        instance_id: str | None = None,
    ) -> tuple[int, datetime]:
        now = utcnow()
        values = {
            "workspace_id": workspace_id, "agent_id": agent_id, "user_id": user_id, "token_id": token_id,
            "root_id": root_id, "source": source, "status": status, "input": input, "model": model,
            "turns": turns, "messages": messages, "params": params, "context": context or {},
            "created_at": now, "updated_at": now, "instance_id": instance_id,
        }  # fmt: skip
        return await self._writer.insert(values), now

    async def finish(
        self,
        execution_id: int,
        *,
        status: str,
        output: str | None,
        error: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        credits: float | None = None,
        finish_reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> datetime:
        """Store the end of a run (``extra``: more columns, e.g. a toolset's ``steps`` and
        ``sources``). Never fails for the caller: a write the database refuses is
        tried again, and if it still fails the end is kept in memory (``unstored``) and written
        by ``store_unstored``, which the server's housekeeping calls until it succeeds."""
        now = utcnow()
        values = {
            "status": status, "output": output, "error": error, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "credits": credits, "finish_reason": finish_reason,
            "updated_at": now,
        }  # fmt: skip
        if extra:
            values.update(extra)
        for delay in END_RETRIES_S:
            try:
                await self._write_end(execution_id, values)
                return now
            except asyncio.CancelledError:
                # the caller went away mid-write: the write may or may not have landed, so it is
                # written again by housekeeping (the same values: writing them twice is harmless)
                self._unstored[execution_id] = values
                raise
            except STORAGE_ERRORS as exc:
                last: BaseException = exc
                log.warning("storing the end of execution %s failed (%s); retrying", execution_id, exc)
                await asyncio.sleep(delay)
        log.error(
            "could not store the end of execution %s (%s): %s; kept in memory and retried at each heartbeat",
            execution_id, status, last,
        )  # fmt: skip
        self._unstored[execution_id] = values
        return now

    async def _write_end(self, execution_id: int, values: dict[str, Any]) -> None:
        await self._writer.update(execution_id, values)

    def unstored_ids(self) -> set[int]:
        return set(self._unstored)

    def unstored(self, execution_id: int) -> bool:
        """Whether this execution has ended but its end is still waiting to be stored."""
        return execution_id in self._unstored

    async def store_unstored(self) -> int:
        """Write the ends that could not be stored earlier; returns how many are still waiting."""
        for execution_id, values in list(self._unstored.items()):
            try:
                await self._write_end(execution_id, values)
            except STORAGE_ERRORS as exc:
                log.warning("the end of execution %s is still not stored: %s", execution_id, exc)
                break  # the database is still unavailable: try again at the next heartbeat
            del self._unstored[execution_id]
            log.info("stored the end of execution %s (%s) after a failure", execution_id, values["status"])
        return len(self._unstored)

    async def set_status(self, execution_id: int, status: str) -> None:
        await self._writer.update(execution_id, {"status": status, "updated_at": utcnow()})

    async def get(self, execution_id: int, workspace_id: int | None = None) -> ExecutionRecord:
        stmt = select(*_PUBLIC_COLUMNS).where(Execution.id == execution_id)
        if workspace_id is not None:
            stmt = stmt.where(Execution.workspace_id == workspace_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise ExecutionNotFound()
        return _record(row)

    async def search(
        self,
        workspace_id: int,
        *,
        agent_id: int | None,
        root_id: int | None,
        status: str | None,
        descending: bool,
        q: str | None = None,
        offset: int,
        limit: int,
        since: datetime | None = None,  # created at or after (the console's date filter)
        before: datetime | None = None,  # created before
    ) -> tuple[list[ExecutionRecord], int]:
        """One page of a workspace's executions with the filters of GET /agent-responses."""
        conditions: list[Any] = [Execution.workspace_id == workspace_id]
        if agent_id is not None:
            conditions.append(Execution.agent_id == agent_id)
        if root_id is not None:
            conditions.append(
                or_(Execution.root_id == root_id, and_(Execution.id == root_id, Execution.root_id.is_(None)))
            )
        if status is not None:
            conditions.append(Execution.status == status)
        if since is not None:
            conditions.append(Execution.created_at >= since)
        if before is not None:
            conditions.append(Execution.created_at < before)
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            titled = select(Agent.id).where(Agent.title.ilike(pattern, escape="\\"))
            conditions.append(
                or_(
                    Execution.input.ilike(pattern, escape="\\"),
                    Execution.output.ilike(pattern, escape="\\"),
                    Execution.agent_id.in_(titled),
                )
            )
        order = Execution.id.desc() if descending else Execution.id.asc()
        async with self._engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(Execution).where(*conditions))).scalar_one()
            rows = (
                await conn.execute(
                    select(*_PUBLIC_COLUMNS).where(*conditions).order_by(order).offset(offset).limit(limit)
                )
            ).all()
        return [_record(r) for r in rows], int(total)

    async def get_full(self, execution_id: int) -> dict[str, Any]:
        """Every stored column, for operators and tests (messages sent to the model included)."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*Execution.__table__.c).where(Execution.id == execution_id))).first()
        if row is None:
            raise ExecutionNotFound()
        return dict(row._mapping)

    async def conversation(self, root_id: int, agent_id: int, workspace_id: int) -> Conversation:
        """The stored turns of a conversation, in order, for continuing it.

        ``root_id`` may name any execution of the conversation; ExecutionNotFound unless it is an
        execution of this agent in this workspace. Turns of failed or cancelled runs are skipped, and
        each finished run contributes its caller's messages followed by its answer."""
        async with self._engine.connect() as conn:
            anchor = (
                await conn.execute(
                    select(Execution.id, Execution.root_id).where(
                        Execution.id == root_id,
                        Execution.agent_id == agent_id,
                        Execution.workspace_id == workspace_id,
                    )
                )
            ).first()
            if anchor is None:
                raise ExecutionNotFound()
            root = anchor.root_id or anchor.id
            rows = (
                await conn.execute(
                    select(Execution.id, Execution.status, Execution.turns, Execution.output, Execution.params)
                    .where(
                        or_(Execution.root_id == root, and_(Execution.id == root, Execution.root_id.is_(None))),
                        Execution.status.in_(("succeeded", *ACTIVE)),
                    )
                    .order_by(Execution.id)
                )
            ).all()
        conversation = Conversation(int(root))
        for execution_id, status, turns, output, params in rows:
            if status in ACTIVE:
                conversation.running_id = int(execution_id)
                continue
            conversation.history.extend(turns)
            conversation.history.append({"role": "assistant", "content": output or ""})
            conversation.execution_ids.append(int(execution_id))
            conversation.fields = dict((params or {}).get("fields") or {})
        return conversation
