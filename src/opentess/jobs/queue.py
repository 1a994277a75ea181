"""Enqueueing, claiming and finishing jobs (the rows of the ``jobs`` table)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentess.clock import utcnow
from opentess.db.models import Job as JobRow

QUEUED, RUNNING, DONE, DEAD = "queued", "running", "done", "dead"


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int  # this attempt's number, from 1
    max_attempts: int
    created_at: datetime

    @property
    def last_attempt(self) -> bool:
        return self.attempts >= self.max_attempts


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler gets besides its job: the things the server holds (store, settings, …)."""

    services: Any


Handler = Callable[[Job, JobContext], Awaitable[None]]
DeadHook = Callable[[Job, JobContext, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class JobKind:
    """A kind of job: its handler, and how its failures are retried. ``delays_s[n - 1]`` is the
    wait after the n-th failed attempt (the last delay repeats), ±20 % jitter."""

    name: str
    handler: Handler
    max_attempts: int = 5
    delays_s: Sequence[float] = (5, 30, 120, 600)
    on_dead: DeadHook | None = None
    lease_s: float = 60.0

    def retry_delay(self, failed_attempt: int, scale: float = 1.0) -> float:
        base = self.delays_s[min(failed_attempt, len(self.delays_s)) - 1] * scale
        return base * random.uniform(0.8, 1.2)


async def enqueue(
    conn: AsyncConnection,
    kind: str,
    payload: dict[str, Any],
    *,
    delay_s: float = 0.0,
    dedupe_key: str | None = None,
    max_attempts: int | None = None,
) -> None:
    """Enqueue inside the caller's transaction: the job exists if and only if the caller's write
    commits. A ``dedupe_key`` already used is a no-op (run once per logical event)."""
    now = utcnow()
    values: dict[str, Any] = {
        "kind": kind, "payload": payload, "status": QUEUED, "run_at": now + timedelta(seconds=delay_s),
        "attempts": 0, "max_attempts": max_attempts or 0, "dedupe_key": dedupe_key, "created_at": now,
        "updated_at": now,
    }  # fmt: skip
    if dedupe_key is None:
        await conn.execute(insert(JobRow).values(**values))
        return
    exists = (await conn.execute(select(JobRow.id).where(JobRow.dedupe_key == dedupe_key))).first()
    if exists is None:
        try:
            async with conn.begin_nested():
                await conn.execute(insert(JobRow).values(**values))
        except IntegrityError:  # enqueued by someone else between the two statements
            pass


@dataclass
class JobQueue:
    """The jobs table on one engine."""

    engine: AsyncEngine
    wakeups: list[Callable[[], None]] = field(default_factory=list)

    async def enqueue(self, kind: str, payload: dict[str, Any], **options: Any) -> None:
        """Enqueue in a transaction of its own, and wake this process's runner."""
        async with self.engine.begin() as conn:
            await enqueue(conn, kind, payload, **options)
        self.wake()

    def wake(self) -> None:
        for wakeup in self.wakeups:
            wakeup()

    async def claim(self, owner: str, kinds: dict[str, JobKind], limit: int) -> list[Job]:
        """Take up to ``limit`` due jobs of these kinds: queued ones whose time has come, and
        running ones whose lease expired (their process died). On PostgreSQL ``FOR UPDATE SKIP
        LOCKED`` keeps claimers on other hosts off the same rows; on SQLite the UPDATE takes the
        database's single write lock, so select and update are atomic across processes."""
        now = utcnow()
        due = or_(
            (JobRow.status == QUEUED) & (JobRow.run_at <= now),
            (JobRow.status == RUNNING) & (JobRow.lease_until < now),
        )
        wanted = JobRow.kind.in_(list(kinds))
        async with self.engine.connect() as conn:  # an idle poll must not take SQLite's write lock
            if (await conn.execute(select(JobRow.id).where(due, wanted).limit(1))).first() is None:
                return []
        ids = (
            select(JobRow.id).where(due, wanted).order_by(JobRow.run_at).limit(limit).with_for_update(skip_locked=True)
        )
        lease = max((k.lease_s for k in kinds.values()), default=60.0)
        stmt = (
            update(JobRow)
            .where(JobRow.id.in_(ids.scalar_subquery()))
            .values(
                status=RUNNING,
                lease_owner=owner,
                lease_until=now + timedelta(seconds=lease),
                attempts=JobRow.attempts + 1,
                updated_at=now,
            )
            .returning(JobRow.id, JobRow.kind, JobRow.payload, JobRow.attempts, JobRow.max_attempts, JobRow.created_at)
        )
        async with self.engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            Job(r.id, r.kind, r.payload or {}, r.attempts, r.max_attempts or kinds[r.kind].max_attempts, r.created_at)
            for r in rows
        ]

    async def renew(self, owner: str, job_ids: Sequence[int], lease_s: float) -> None:
        if not job_ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                update(JobRow)
                .where(JobRow.id.in_(list(job_ids)), JobRow.lease_owner == owner, JobRow.status == RUNNING)
                .values(lease_until=utcnow() + timedelta(seconds=lease_s))
            )

    async def finish(self, owner: str, job: Job, kind: JobKind, error: str | None, *, scale: float = 1.0) -> str:
        """Record an attempt's outcome: done, queued again (after the kind's backoff) or dead.
        Fenced by the lease: a runner whose lease passed to another changes nothing ("lost")."""
        now = utcnow()
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None, "updated_at": now, "last_error": error}
        if error is None:
            outcome = DONE
            values.update(status=DONE, finished_at=now)
        elif job.attempts >= job.max_attempts:
            outcome = DEAD
            values.update(status=DEAD, finished_at=now)
        else:
            outcome = QUEUED
            values.update(status=QUEUED, run_at=now + timedelta(seconds=kind.retry_delay(job.attempts, scale)))
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(JobRow)
                .where(JobRow.id == job.id, JobRow.lease_owner == owner, JobRow.status == RUNNING)
                .values(**values)
            )
        return outcome if result.rowcount == 1 else "lost"

    async def counts(self) -> dict[str, int]:
        """Jobs by status (for tests, metrics and operators)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(JobRow.status, func.count()).group_by(JobRow.status))).all()
        return {status: int(n) for status, n in rows}

    async def next_due(self, kinds: Sequence[str]) -> datetime | None:
        async with self.engine.connect() as conn:
            value = (
                await conn.execute(
                    select(func.min(JobRow.run_at)).where(JobRow.status == QUEUED, JobRow.kind.in_(list(kinds)))
                )
            ).scalar_one_or_none()
        return value
