"""Agents, scoped to a workspace. A deleted agent disappears from every route but its executions
stay readable."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentess.agents import AgentSpec, slugify
from opentess.cache import TTLCache
from opentess.clock import utcnow
from opentess.db.models import Agent
from opentess.errors import AgentNotFound, Conflict
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
    max_tokens: int | None = None
    # the questions by name (the first of a name), for the lookups every execution makes
    _by_name: dict[str, Question] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Question] = {}
        for q in self.questions:
            by_name.setdefault(q.name, q)
        object.__setattr__(self, "_by_name", by_name)

    def spec(self) -> AgentSpec:
        """The definition this agent was saved from (for partial updates)."""
        return AgentSpec(
            title=self.title, type=self.type, description=self.description,  # type: ignore[arg-type]
            long_description=self.long_description, visibility=self.visibility,  # type: ignore[arg-type]
            slug=self.slug, active=bool(self.active), instructions=self.instructions, questions=self.questions,
            max_tokens=self.max_tokens,
        )  # fmt: skip

    def question(self, name: str) -> Question | None:
        return self._by_name.get(name)


def _record(row: Any) -> AgentRecord:
    r = row._mapping
    return AgentRecord(
        r["id"], r["workspace_id"], r["title"], r["slug"], r["description"], r["long_description"],
        r["visibility"], r["active"], r["type"], r["instructions"],
        [Question.model_validate(q) for q in r["questions"]], r["created_at"], r["updated_at"], r["max_tokens"],
    )  # fmt: skip


_LIVE = Agent.deleted_at.is_(None)


def _slug_taken(slug: str) -> Conflict:
    return Conflict(f"Another agent of this workspace has the slug {slug!r}.", param="slug")


SLUG_ATTEMPTS = 5  # tries of a derived slug when concurrent creates take the same one


class AgentStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # the run routes read agents at most once a second (edits reach every process within 1 s).
        # Keyed by workspace, with misses cached too: an agent of another workspace and an id
        # that does not exist take exactly the same path (no timing tells them apart).
        self._recent: TTLCache[tuple[int, int], AgentRecord | None] = TTLCache(1.0)

    async def get_recent(self, agent_id: int, workspace_id: int) -> AgentRecord:
        """``get`` for the hot path: may be up to one second old."""
        agent = await self._recent.get_or_load((agent_id, workspace_id), lambda: self._find(agent_id, workspace_id))
        if agent is None:
            raise AgentNotFound()
        return agent

    async def _find(self, agent_id: int, workspace_id: int) -> AgentRecord | None:
        try:
            return await self.visible(agent_id, workspace_id)
        except AgentNotFound:
            return None

    async def visible(self, agent_id: int, workspace_id: int) -> AgentRecord:
        """An agent the workspace may read and run: its own, or a ``public`` one of any
        workspace (whose runs and records belong to the caller's workspace). AgentNotFound for
        anything else — a private agent of another workspace is exactly a missing one."""
        stmt = select(*Agent.__table__.c).where(
            Agent.id == agent_id, _LIVE, or_(Agent.workspace_id == workspace_id, Agent.visibility == "public")
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise AgentNotFound()
        return _record(row)

    async def create(self, spec: AgentSpec, workspace_id: int) -> AgentRecord:
        """A new agent. A slug given in ``spec`` must be free in the workspace (Conflict); one
        derived from the title gets a number when taken (``support-bot-2``)."""
        now = utcnow()
        values = spec.model_dump(exclude={"questions", "active", "slug"})
        for attempt in range(1, SLUG_ATTEMPTS + 1):
            try:
                async with self._engine.begin() as conn:
                    slug = spec.slug or await self._free_slug(conn, workspace_id, slugify(spec.title))
                    agent_id = (
                        await conn.execute(
                            insert(Agent)
                            .values(
                                **values,
                                workspace_id=workspace_id,
                                slug=slug,
                                active=int(spec.active),
                                questions=[q.model_dump(exclude_none=True) for q in spec.questions],
                                created_at=now,
                                updated_at=now,
                            )
                            .returning(Agent.id)
                        )
                    ).scalar_one()
                break
            except IntegrityError as exc:
                # a derived slug that a concurrent create took between the look and the insert:
                # look again for the next free one
                if spec.slug or attempt == SLUG_ATTEMPTS:
                    raise _slug_taken(spec.slug or slugify(spec.title)) from exc
        return await self.get(agent_id)

    @staticmethod
    async def _free_slug(conn: AsyncConnection, workspace_id: int, base: str) -> str:
        taken = set(
            (
                await conn.execute(
                    select(Agent.slug).where(Agent.workspace_id == workspace_id, _LIVE, Agent.slug.like(f"{base}%"))
                )
            ).scalars()
        )
        slug, n = base, 1
        while slug in taken:
            n += 1
            slug = f"{base}-{n}"
        return slug

    async def by_slug(self, slug: str, workspace_id: int) -> AgentRecord | None:
        """The live agent of this workspace with this slug, if any."""
        stmt = select(*Agent.__table__.c).where(Agent.slug == slug, Agent.workspace_id == workspace_id, _LIVE)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _record(row)

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

    async def list_all(self, workspace_id: int | None = None) -> list[AgentRecord]:
        stmt = select(*Agent.__table__.c).where(_LIVE).order_by(Agent.id)
        if workspace_id is not None:
            stmt = stmt.where(Agent.workspace_id == workspace_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_record(r) for r in rows]

    async def search(
        self, workspace_id: int, *, q: str | None, type: str | None, offset: int, limit: int, public: bool = False
    ) -> tuple[list[AgentRecord], int]:
        """One page of a workspace's agents (by id) matching ``q`` and ``type``, and the total;
        ``public``: the public agents of every workspace instead."""
        conditions = [Agent.visibility == "public" if public else Agent.workspace_id == workspace_id, _LIVE]
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conditions.append(
                or_(
                    Agent.title.ilike(pattern, escape="\\"),
                    Agent.description.ilike(pattern, escape="\\"),
                    Agent.long_description.ilike(pattern, escape="\\"),
                )
            )
        if type:
            conditions.append(Agent.type == type)
        async with self._engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(Agent).where(*conditions))).scalar_one()
            rows = (
                await conn.execute(
                    select(*Agent.__table__.c).where(*conditions).order_by(Agent.id).offset(offset).limit(limit)
                )
            ).all()
        return [_record(r) for r in rows], int(total)

    async def update(self, agent_id: int, workspace_id: int, spec: AgentSpec) -> AgentRecord:
        """Replace the agent's definition with ``spec`` (the caller merged the changes)."""
        values = spec.model_dump(exclude={"questions", "active", "slug"})
        slug = spec.slug or slugify(spec.title)
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    update(Agent)
                    .where(Agent.id == agent_id, Agent.workspace_id == workspace_id, _LIVE)
                    .values(
                        **values,
                        slug=slug,
                        active=int(spec.active),
                        questions=[q.model_dump(exclude_none=True) for q in spec.questions],
                        updated_at=utcnow(),
                    )
                )
        except IntegrityError as exc:
            raise _slug_taken(slug) from exc
        if result.rowcount == 0:
            raise AgentNotFound()
        self._recent.discard((agent_id, workspace_id))
        return await self.get(agent_id, workspace_id)

    async def delete(self, agent_id: int, workspace_id: int | None = None) -> None:
        stmt = update(Agent).where(Agent.id == agent_id, _LIVE).values(deleted_at=utcnow())
        if workspace_id is not None:
            stmt = stmt.where(Agent.workspace_id == workspace_id)
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt)
        if workspace_id is None:
            self._recent.clear()
        else:
            self._recent.discard((agent_id, workspace_id))
        if result.rowcount == 0:
            raise AgentNotFound()
