"""Agents, scoped to a workspace. A deleted agent disappears from every route but its executions
stay readable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.agents import AgentSpec, slugify
from opentess.clock import utcnow
from opentess.db.models import Agent
from opentess.errors import AgentNotFound
from opentess.questions import Question


@dataclass(frozen=True, slots=True)
class AgentRecord:
    id: int
    workspace_id: int
    title: str
    slug: str
    description: str
    long_description: str
    visibility: str
    active: int
    type: str
    instructions: str
    questions: list[Question]
    created_at: datetime
    updated_at: datetime

    def question(self, name: str) -> Question | None:
        for q in self.questions:
            if q.name == name:
                return q
        return None


def _record(row: Any) -> AgentRecord:
    r = row._mapping
    return AgentRecord(
        r["id"], r["workspace_id"], r["title"], r["slug"], r["description"], r["long_description"],
        r["visibility"], r["active"], r["type"], r["instructions"],
        [Question.model_validate(q) for q in r["questions"]], r["created_at"], r["updated_at"],
    )  # fmt: skip


_LIVE = Agent.deleted_at.is_(None)


class AgentStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, spec: AgentSpec, workspace_id: int) -> AgentRecord:
        now = utcnow()
        values = spec.model_dump(exclude={"questions", "active", "slug"})
        async with self._engine.begin() as conn:
            agent_id = (
                await conn.execute(
                    insert(Agent)
                    .values(
                        **values,
                        workspace_id=workspace_id,
                        slug=spec.slug or slugify(spec.title),
                        active=int(spec.active),
                        questions=[q.model_dump(exclude_none=True) for q in spec.questions],
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(Agent.id)
                )
            ).scalar_one()
        return await self.get(agent_id)

    async def get(self, agent_id: int, workspace_id: int | None = None) -> AgentRecord:
        """The live agent; AgentNotFound when missing, deleted, or in another workspace."""
        stmt = select(*Agent.__table__.c).where(Agent.id == agent_id, _LIVE)
        if workspace_id is not None:
            stmt = stmt.where(Agent.workspace_id == workspace_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise AgentNotFound()
        return _record(row)

    async def list(self, workspace_id: int | None = None) -> list[AgentRecord]:
        stmt = select(*Agent.__table__.c).where(_LIVE).order_by(Agent.id)
        if workspace_id is not None:
            stmt = stmt.where(Agent.workspace_id == workspace_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_record(r) for r in rows]

    async def delete(self, agent_id: int, workspace_id: int | None = None) -> None:
        stmt = update(Agent).where(Agent.id == agent_id, _LIVE).values(deleted_at=utcnow())
        if workspace_id is not None:
            stmt = stmt.where(Agent.workspace_id == workspace_id)
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt)
        if result.rowcount == 0:
            raise AgentNotFound()
