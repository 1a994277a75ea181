"""The outbox: a delivery row and its job, written in one transaction, for every active webhook
of an execution's agent once the execution has ended — before anything is sent.

Two paths write it, and the unique (webhook, execution) index makes them agree on one row:

- at once, when a run of this process stores its end (``Dispatcher.on_end``, an end hook of the
  execution service): the common case, no delay;
- the **sweep**, every ``OPENTESS_WEBHOOK_SWEEP_S`` in every process: it finds ended executions
  of webhook agents that have no delivery yet — runs ended by the reaper (their process died),
  ends stored late (the database was down), ends seen by a process that did not yet know of a
  new webhook, a crash between storing an end and writing its delivery. Each webhook keeps a
  low-water mark (``sweep_from``) below which every execution of its agent has been looked at,
  so a sweep reads only recent executions; the mark never passes a running execution, nor one
  that ended less than ``GRACE_S`` ago.

Only executions of the webhook's own workspace are delivered (a ``public`` agent run by
another workspace is that workspace's business), and only those that ended after the webhook
was (re)activated."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentess.clock import utcnow
from opentess.db.locking import conflict_insert
from opentess.db.models import Execution
from opentess.jobs import JobQueue, enqueue
from opentess.store.executions import ACTIVE, TERMINAL
from opentess.webhooks.store import ACTIVE_STATUS, WebhookStore
from opentess.webhooks.tables import Webhook, WebhookDelivery

log = logging.getLogger("opentess.webhooks")
DELIVER = "webhook.deliver"
GRACE_S = 300.0
SWEEP_BATCH = 500

_DELIVERED = exists().where(WebhookDelivery.webhook_id == Webhook.id, WebhookDelivery.execution_id == Execution.id)
_OF_WEBHOOK = and_(
    Execution.agent_id == Webhook.agent_id,
    Execution.workspace_id == Webhook.workspace_id,
    Execution.status.in_(TERMINAL),
    Execution.updated_at >= Webhook.active_since,
)


async def _insert_delivery(conn: AsyncConnection, webhook_id: int, execution_id: int) -> int | None:
    """A new pending delivery, or None when one exists already (written by another path)."""
    now = utcnow()
    stmt = (
        conflict_insert(conn.dialect.name, WebhookDelivery)
        .values(
            webhook_id=webhook_id, execution_id=execution_id, message_id=f"msg_{uuid.uuid4().hex}",
            status="pending", attempts=0, created_at=now, updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(WebhookDelivery.id)
    )  # fmt: skip
    found = (await conn.execute(stmt)).scalar_one_or_none()
    return None if found is None else int(found)


async def _write(conn: AsyncConnection, pairs: list[tuple[int, int]]) -> int:
    written = 0
    for webhook_id, execution_id in pairs:
        delivery_id = await _insert_delivery(conn, webhook_id, execution_id)
        if delivery_id is not None:
            await enqueue(conn, DELIVER, {"delivery_id": delivery_id})
            written += 1
    return written


async def enqueue_for_execution(engine: AsyncEngine, execution_id: int) -> int:
    """The deliveries of one ended execution (none when it has not ended, as far as the
    database knows); returns how many were written."""
    stmt = (
        select(Webhook.id)
        .join(Execution, _OF_WEBHOOK)
        .where(Execution.id == execution_id, Webhook.status == ACTIVE_STATUS, Webhook.deleted_at.is_(None))
        .where(~_DELIVERED)
    )
    async with engine.begin() as conn:
        webhook_ids = [int(i) for i in (await conn.execute(stmt)).scalars()]
        return await _write(conn, [(w, execution_id) for w in webhook_ids])


async def sweep(engine: AsyncEngine) -> int:
    """One pass of the safety net over every active webhook; returns the deliveries written."""
    async with engine.connect() as conn:
        hooks = (
            await conn.execute(
                select(Webhook.id, Webhook.agent_id, Webhook.workspace_id, Webhook.sweep_from).where(
                    Webhook.status == ACTIVE_STATUS, Webhook.deleted_at.is_(None)
                )
            )
        ).all()
    written = 0
    for hook in hooks:
        written += await _sweep_one(
            engine, int(hook.id), int(hook.agent_id), int(hook.workspace_id), int(hook.sweep_from)
        )
    return written


async def _sweep_one(engine: AsyncEngine, webhook_id: int, agent_id: int, workspace_id: int, mark: int) -> int:
    window: list[Any] = [Execution.agent_id == agent_id, Execution.workspace_id == workspace_id, Execution.id >= mark]
    recent = utcnow() - timedelta(seconds=GRACE_S)
    async with engine.begin() as conn:
        # the new mark first: what is below it now was already ended (long enough) when the
        # search below starts, so nothing below it can be missed
        unsettled = (
            await conn.execute(
                select(func.min(Execution.id)).where(
                    *window, or_(Execution.status.in_(ACTIVE), Execution.updated_at > recent)
                )
            )
        ).scalar_one_or_none()
        if unsettled is not None:
            new_mark = int(unsettled)
        else:
            newest = (await conn.execute(select(func.max(Execution.id)).where(*window))).scalar_one_or_none()
            new_mark = mark if newest is None else int(newest) + 1
        missing = (
            await conn.execute(
                select(Execution.id)
                .join(Webhook, _OF_WEBHOOK)
                .where(Webhook.id == webhook_id, *window, ~_DELIVERED)
                .order_by(Execution.id)
                .limit(SWEEP_BATCH)
            )
        ).scalars()
        pairs = [(webhook_id, int(i)) for i in missing]
        written = await _write(conn, pairs)
        if len(pairs) < SWEEP_BATCH and new_mark != mark:
            await conn.execute(
                update(Webhook).where(Webhook.id == webhook_id, Webhook.sweep_from == mark).values(sweep_from=new_mark)
            )
    if written:
        log.info("webhook %s: %d delivery(ies) found by the sweep", webhook_id, written)
    return written


class Dispatcher:
    """Writes the outbox of this process's ended runs at once, and sweeps in the background."""

    def __init__(self, engine: AsyncEngine, store: WebhookStore, jobs: JobQueue, sweep_s: float) -> None:
        self.engine = engine
        self.store = store
        self.jobs = jobs
        self.sweep_s = sweep_s
        # agents with an active webhook, as last read (the sweep covers what a stale copy misses)
        self.agents: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._last_problem = ""

    def note(self, agent_id: int) -> None:
        """An agent of this process got an active webhook: deliver its ends from now on."""
        self.agents.add(agent_id)

    def on_end(self, live: Any) -> None:
        """End hook of the execution service (called once a run's end is stored): costs a set
        lookup unless the agent has webhooks; the writing goes on in a task of its own, so the
        caller's answer never waits for it."""
        if live.plan.agent_id in self.agents:
            self._spawn(self._dispatch, live.id)

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        task = asyncio.get_running_loop().create_task(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, execution_id: int) -> None:
        try:
            if await enqueue_for_execution(self.engine, execution_id):
                self.jobs.wake()
        except Exception:  # the sweep writes it later
            log.warning("could not write the webhook deliveries of execution %s; the sweep will", execution_id)

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(self._run())

    async def sweep_once(self) -> int:
        self.agents = await self.store.active_agents()
        written = await sweep(self.engine)
        if written:
            self.jobs.wake()
        return written

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep_once()
                self._last_problem = ""
            except Exception as exc:
                # logged once per kind of problem (an unmigrated database would say it every pass)
                if str(exc) != self._last_problem:
                    log.warning("webhook sweep failed (%s); retrying every %g s", exc, self.sweep_s)
                    self._last_problem = str(exc)
            await asyncio.sleep(self.sweep_s)

    async def aclose(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        if self._tasks:  # the ends of runs stopped by the shutdown: written before the store closes
            await asyncio.gather(*self._tasks, return_exceptions=True)
