"""Durable background work: file processing, webhook deliveries — anything that outlives a
request. A job is a row of the ``jobs`` table, in the same database as everything else:

- **durable**: enqueued in the same transaction as the write that causes it (or right after),
  it survives restarts; nothing lives only in memory;
- **run once across processes**: a runner *claims* due jobs with a lease (``FOR UPDATE SKIP
  LOCKED`` on PostgreSQL; SQLite's single write lock on the embedded default), renews the lease
  while the job runs, and records the outcome only while it still holds the lease;
- **recovered**: the lease of a process that died expires and another runner takes the job;
- **retried**: a failed attempt runs again after the job kind's backoff (with jitter), up to
  its attempts; then the job is ``dead`` and its kind's ``on_dead`` hook records the outcome;
- **deduplicated**: a ``dedupe_key`` makes enqueueing the same logical job twice a no-op.

Why a table of our own and not a job library: no maintained asyncio library serves both the
embedded SQLite default and PostgreSQL (docs/architecture.md, "Background jobs", says which were
tried and why each fails one of them); procrastinate or pgqueuer are the ones to reach for if
PostgreSQL-only deployments ever outgrow this. Jobs run at least once: handlers are idempotent.
"""

from opentess.jobs.queue import Job, JobContext, JobKind, JobQueue, enqueue
from opentess.jobs.runner import JobRunner

__all__ = ["Job", "JobContext", "JobKind", "JobQueue", "JobRunner", "enqueue"]
