"""The delivery job: one attempt per run of the job, recorded; a failure raises, so that the job
is retried on the webhook schedule (``RETRY_DELAYS_S``: 30 s, 2 min, 10 min, 30 min, 1 h, 3 h,
6 h, 12 h — nine attempts over about 23 hours); after the last one the delivery is ``failed``
and counts toward disabling its webhook.

Jobs run at least once: a process that dies after sending but before recording sends again
(same ``webhook-id``, which receivers deduplicate on). Everything else is idempotent: a
delivery already decided is left alone."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentess.clock import utcnow
from opentess.jobs import Job, JobContext, JobKind
from opentess.store.executions import TERMINAL, ExecutionStore
from opentess.webhooks.outbox import DELIVER
from opentess.webhooks.sender import Outcome, Sender
from opentess.webhooks.store import ACTIVE_STATUS, INACTIVE_STATUS
from opentess.webhooks.tables import Webhook, WebhookAttempt, WebhookDelivery

log = logging.getLogger("opentess.webhooks")
RETRY_DELAYS_S = (30, 120, 600, 1800, 3600, 10800, 21600, 43200)
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1


class DeliveryFailed(Exception):
    """An attempt failed (its outcome is recorded); the job is retried."""


class Deliverer:
    def __init__(self, engine: AsyncEngine, executions: ExecutionStore, sender: Sender, disable_after: int) -> None:
        self.engine = engine
        self.executions = executions
        self.sender = sender
        self.disable_after = disable_after

    def job_kind(self) -> JobKind:
        return JobKind(
            DELIVER,
            self.handle,
            max_attempts=MAX_ATTEMPTS,
            delays_s=RETRY_DELAYS_S,
            on_dead=self.dead,
            lease_s=60.0,
        )

    async def handle(self, job: Job, _context: JobContext) -> None:
        delivery_id = int(job.payload["delivery_id"])
        stmt = (
            select(
                WebhookDelivery.status,
                WebhookDelivery.execution_id,
                WebhookDelivery.message_id,
                Webhook.id.label("webhook_id"),
                Webhook.url,
                Webhook.method,
                Webhook.secret,
                Webhook.status.label("webhook_status"),
                Webhook.deleted_at,
            )
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.id == delivery_id)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None or row.status != "pending":
            return  # decided by an earlier run of this job
        if row.deleted_at is not None or row.webhook_status != ACTIVE_STATUS:
            why = "the webhook was deleted" if row.deleted_at is not None else "the webhook is inactive"
            await self._close(delivery_id, "cancelled", why)
            return
        record = await self.executions.get(int(row.execution_id))
        if record.status not in TERMINAL:  # cannot happen: deliveries are written after the end
            raise DeliveryFailed(f"execution {record.id} has not ended")
        from opentess.api import wire  # the execution object, exactly as GET /agent-responses/{id}

        outcome = await self.sender.send(row.url, row.method, row.secret, row.message_id, wire.execution(record))
        await self._record(delivery_id, int(row.webhook_id), job.attempts, outcome)
        if not outcome.success:
            raise DeliveryFailed(outcome.error or "failed")

    async def _record(self, delivery_id: int, webhook_id: int, attempt: int, outcome: Outcome) -> None:
        """The attempt, the delivery's state and the webhook's counters, together."""
        now = utcnow()
        delivery: dict[str, Any] = {"attempts": attempt, "updated_at": now, "error": outcome.error}
        counters: dict[str, Any]
        if outcome.success:
            delivery.update(status="succeeded", delivered_at=now)
            counters = {"success_count": Webhook.success_count + 1, "consecutive_failures": 0}
        else:
            counters = {"failure_count": Webhook.failure_count + 1}
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(WebhookAttempt).values(
                    delivery_id=delivery_id, attempt=attempt, created_at=now, success=outcome.success,
                    status_code=outcome.status_code, duration_ms=outcome.duration_ms, error=outcome.error,
                    response=outcome.response,
                )
            )  # fmt: skip
            await conn.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending")
                .values(**delivery)
            )
            await conn.execute(update(Webhook).where(Webhook.id == webhook_id).values(**counters, updated_at=now))

    async def _close(self, delivery_id: int, status: str, error: str, conn: AsyncConnection | None = None) -> int:
        values = {"status": status, "error": error, "updated_at": utcnow()}
        stmt = (
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending")
            .values(**values)
        )
        if conn is not None:
            return int((await conn.execute(stmt)).rowcount)
        async with self.engine.begin() as own:
            return int((await own.execute(stmt)).rowcount)

    async def dead(self, job: Job, _context: JobContext, error: str) -> None:
        """The last attempt failed: the delivery is ``failed``; after ``disable_after`` such
        deliveries in a row the webhook is turned off, with the reason on it."""
        delivery_id = int(job.payload["delivery_id"])
        async with self.engine.begin() as conn:
            if not await self._close(delivery_id, "failed", f"gave up after {job.attempts} attempts: {error}", conn):
                return
            webhook_id = (
                await conn.execute(select(WebhookDelivery.webhook_id).where(WebhookDelivery.id == delivery_id))
            ).scalar_one()
            await conn.execute(
                update(Webhook)
                .where(Webhook.id == webhook_id)
                .values(consecutive_failures=Webhook.consecutive_failures + 1)
            )
            run = (
                await conn.execute(select(Webhook.consecutive_failures).where(Webhook.id == webhook_id))
            ).scalar_one()
            if run >= self.disable_after:
                now = utcnow()
                reason = (f"disabled after {run} deliveries in a row failed every attempt; the last one: {error}")[
                    :2000
                ]
                turned_off = await conn.execute(
                    update(Webhook)
                    .where(Webhook.id == webhook_id, Webhook.status == ACTIVE_STATUS)
                    .values(status=INACTIVE_STATUS, disabled_reason=reason, disabled_at=now, updated_at=now)
                )
                if turned_off.rowcount:
                    log.warning("webhook %s %s", webhook_id, reason)
