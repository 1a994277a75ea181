"""Webhooks of a workspace's agents, and what their deliveries did.

A webhook belongs to the workspace of its agent (another workspace's is a missing one), and to
the user who registered it (``user_id``). Deleting one keeps its rows (``deleted_at``) so that
its deliveries stay explainable; it is then gone from every route."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentess.clock import utcnow
from opentess.db.locking import lock_parent
from opentess.db.models import Agent, Execution
from opentess.errors import Conflict, WebhookNotFound
from opentess.store.executions import ACTIVE
from opentess.webhooks.tables import Webhook, WebhookAttempt, WebhookDelivery

ACTIVE_STATUS, INACTIVE_STATUS = "active", "inactive"
METHODS = ("POST", "GET")
STATUSES = (ACTIVE_STATUS, INACTIVE_STATUS)
_LIVE = Webhook.deleted_at.is_(None)


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    id: int
    workspace_id: int
    agent_id: int
    user_id: int
    url: str
    method: str
    status: str
    secret: str
    success_count: int
    failure_count: int
    consecutive_failures: int
    disabled_reason: str | None
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    attempt: int
    created_at: datetime
    success: bool
    status_code: int | None
    duration_ms: float | None
    error: str | None
    response: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    webhook_id: int
    execution_id: int
    message_id: str
    status: str
    attempts: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    tries: list[AttemptRecord] = field(default_factory=list)


def _webhook(row: Any) -> WebhookRecord:
    r = row._mapping
    return WebhookRecord(
        r["id"], r["workspace_id"], r["agent_id"], r["user_id"], r["url"], r["method"], r["status"], r["secret"],
        r["success_count"], r["failure_count"], r["consecutive_failures"], r["disabled_reason"], r["disabled_at"],
        r["created_at"], r["updated_at"], r["deleted_at"],
    )  # fmt: skip


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def first_unseen(conn: AsyncConnection, agent_id: int, workspace_id: int) -> int:
    """Where the safety sweep of a webhook made now starts: the oldest execution of the agent
    still running, else the next execution to be made."""
    running = (
        await conn.execute(
            select(func.min(Execution.id)).where(
                Execution.status.in_(ACTIVE), Execution.agent_id == agent_id, Execution.workspace_id == workspace_id
            )
        )
    ).scalar_one_or_none()
    if running is not None:
        return int(running)
    newest = (await conn.execute(select(func.max(Execution.id)))).scalar_one_or_none()
    return int(newest or 0) + 1


class WebhookStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self, *, workspace_id: int, agent_id: int, user_id: int, url: str, method: str, status: str, limit: int
    ) -> WebhookRecord:
        """A new webhook of the agent; Conflict when the agent has ``limit`` already (counted in
        the same transaction, with concurrent creates serialised: opentess.db.locking)."""
        now = utcnow()
        async with self._engine.begin() as conn:
            await lock_parent(conn, Agent.id, agent_id)
            new_id = (
                await conn.execute(
                    insert(Webhook)
                    .values(
                        workspace_id=workspace_id, agent_id=agent_id, user_id=user_id, url=url, method=method,
                        status=status, secret=new_secret(), success_count=0, failure_count=0, consecutive_failures=0,
                        active_since=now, sweep_from=await first_unseen(conn, agent_id, workspace_id),
                        created_at=now, updated_at=now,
                    )
                    .returning(Webhook.id)
                )
            ).scalar_one()  # fmt: skip
            live = select(func.count()).select_from(Webhook).where(Webhook.agent_id == agent_id, _LIVE)
            if (await conn.execute(live)).scalar_one() > limit:
                raise Conflict(f"Agent {agent_id} already has {limit} webhooks; delete one first.")
        return await self.get(int(new_id), workspace_id)

    async def page(
        self, workspace_id: int, *, agent_id: int | None, offset: int, limit: int
    ) -> tuple[list[WebhookRecord], int]:
        conditions: list[Any] = [Webhook.workspace_id == workspace_id, _LIVE]
        if agent_id is not None:
            conditions.append(Webhook.agent_id == agent_id)
        async with self._engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(Webhook).where(*conditions))).scalar_one()
            rows = (
                await conn.execute(
                    select(*Webhook.__table__.c).where(*conditions).order_by(Webhook.id).offset(offset).limit(limit)
                )
            ).all()
        return [_webhook(r) for r in rows], int(total)

    async def get(self, webhook_id: int, workspace_id: int | None = None) -> WebhookRecord:
        """A live webhook (of this workspace); WebhookNotFound otherwise."""
        stmt = select(*Webhook.__table__.c).where(Webhook.id == webhook_id, _LIVE)
        if workspace_id is not None:
            stmt = stmt.where(Webhook.workspace_id == workspace_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise WebhookNotFound()
        return _webhook(row)

    async def update(self, webhook_id: int, workspace_id: int, changes: dict[str, str]) -> WebhookRecord:
        """Change ``url``, ``method`` or ``status``. Turning a webhook (back) on clears its
        failure run and why it was disabled; it delivers the executions that end from then on."""
        current = await self.get(webhook_id, workspace_id)
        now = utcnow()
        values: dict[str, Any] = {**changes, "updated_at": now}
        async with self._engine.begin() as conn:
            if changes.get("status") == ACTIVE_STATUS and current.status != ACTIVE_STATUS:
                values.update(
                    consecutive_failures=0, disabled_reason=None, disabled_at=None, active_since=now,
                    sweep_from=await first_unseen(conn, current.agent_id, workspace_id),
                )  # fmt: skip
            await conn.execute(update(Webhook).where(Webhook.id == webhook_id).values(**values))
        return await self.get(webhook_id, workspace_id)

    async def delete(self, webhook_id: int, workspace_id: int) -> WebhookRecord:
        found = await self.get(webhook_id, workspace_id)
        now = utcnow()
        async with self._engine.begin() as conn:
            await conn.execute(update(Webhook).where(Webhook.id == webhook_id).values(deleted_at=now, updated_at=now))
        return found

    async def active_agents(self) -> set[int]:
        """The agents that have an active webhook (any workspace)."""
        stmt = select(Webhook.agent_id).where(Webhook.status == ACTIVE_STATUS, _LIVE).distinct()
        async with self._engine.connect() as conn:
            return {int(i) for i in (await conn.execute(stmt)).scalars()}

    async def deliveries(self, webhook_id: int, *, offset: int, limit: int) -> tuple[list[DeliveryRecord], int]:
        """A page of the webhook's deliveries, newest first, each with its attempts."""
        where = WebhookDelivery.webhook_id == webhook_id
        async with self._engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(WebhookDelivery).where(where))).scalar_one()
            rows = (
                await conn.execute(
                    select(*WebhookDelivery.__table__.c)
                    .where(where)
                    .order_by(WebhookDelivery.id.desc())
                    .offset(offset)
                    .limit(limit)
                )
            ).all()
            ids = [r.id for r in rows]
            tries: dict[int, list[AttemptRecord]] = {i: [] for i in ids}
            if ids:
                attempts = (
                    await conn.execute(
                        select(*WebhookAttempt.__table__.c)
                        .where(WebhookAttempt.delivery_id.in_(ids))
                        .order_by(WebhookAttempt.id)
                    )
                ).all()
                for a in attempts:
                    tries[a.delivery_id].append(
                        AttemptRecord(
                            a.attempt, a.created_at, bool(a.success), a.status_code, a.duration_ms, a.error, a.response
                        )
                    )
        return [
            DeliveryRecord(
                r.id, r.webhook_id, r.execution_id, r.message_id, r.status, r.attempts, r.error, r.created_at,
                r.updated_at, r.delivered_at, tries[r.id],
            )
            for r in rows
        ], int(total)  # fmt: skip
