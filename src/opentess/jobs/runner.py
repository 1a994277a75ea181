"""The job runner of one server process: claims due jobs of the kinds it knows, runs each in a
task of its own (at most ``concurrency`` at once), renews their leases while they run, and
records each outcome. Woken at once by jobs this process enqueues; other processes' jobs are
found by polling every ``poll_s``."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import Any

from opentess.jobs.queue import DEAD, Job, JobContext, JobKind, JobQueue

log = logging.getLogger("opentess.jobs")


class JobRunner:
    def __init__(
        self,
        queue: JobQueue,
        services: Any = None,
        *,
        concurrency: int = 4,
        poll_s: float = 1.0,
        backoff_scale: float = 1.0,
    ) -> None:
        self.queue = queue
        self.context = JobContext(services)
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.backoff_scale = backoff_scale  # tests shrink the retry schedule
        self.owner = f"runner-{uuid.uuid4().hex[:12]}"
        self.kinds: dict[str, JobKind] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        queue.wakeups.append(self.wake)

    def bind(self, services: Any) -> None:
        """What handlers get as ``context.services`` (the app's state)."""
        self.context = JobContext(services)

    def _forget(self, job_id: int, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)

    def register(self, kind: JobKind) -> None:
        self.kinds[kind.name] = kind

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._loop_task is None and self.kinds:
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
            self._renew_task = asyncio.get_running_loop().create_task(self._renew())

    async def _run(self) -> None:
        while True:
            free = self.concurrency - len(self._running)
            jobs: list[Job] = []
            if free > 0:
                try:
                    jobs = await self.queue.claim(self.owner, self.kinds, free)
                except Exception:
                    log.exception("claiming jobs failed; retrying")
            for job in jobs:
                task = asyncio.get_running_loop().create_task(self._attempt(job))
                self._running[job.id] = task
                task.add_done_callback(functools.partial(self._forget, job.id))
            if jobs and len(self._running) < self.concurrency:
                continue  # there may be more due now
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
            except TimeoutError:
                pass

    async def _attempt(self, job: Job) -> None:
        kind = self.kinds[job.kind]
        error: str | None = None
        try:
            await kind.handler(job, self.context)
        except asyncio.CancelledError:
            # the server is stopping: leave the lease to expire, another runner takes the job
            raise
        except Exception as exc:  # the attempt failed: recorded, and retried by the kind's rule
            error = f"{type(exc).__name__}: {exc}"[:2000]
            log.warning("job %s (%s) attempt %s failed: %s", job.id, job.kind, job.attempts, error)
        try:
            outcome = await self.queue.finish(self.owner, job, kind, error, scale=self.backoff_scale)
        except Exception:
            log.exception("could not record the outcome of job %s; its lease will expire and it runs again", job.id)
            return
        if outcome == DEAD and kind.on_dead is not None:
            try:
                await kind.on_dead(job, self.context, error or "")
            except Exception:
                log.exception("the dead-job hook of job %s (%s) failed", job.id, job.kind)
        if outcome == "lost":
            log.warning("job %s ran past its lease, which another runner took; its outcome was dropped", job.id)
        self.wake()  # a slot is free

    async def _renew(self) -> None:
        lease = max((k.lease_s for k in self.kinds.values()), default=60.0)
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await self.queue.renew(self.owner, list(self._running), lease)
            except Exception:
                log.exception("renewing job leases failed; retrying")

    async def idle(self) -> None:
        """Wait until no job of this runner is running (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Stop claiming; give running jobs ``grace_s`` to end, then cancel them (their leases
        expire and other runners take them)."""
        for task in (self._loop_task, self._renew_task):
            if task is not None:
                task.cancel()
        for task in (self._loop_task, self._renew_task):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        self._loop_task = self._renew_task = None
        if self._running:
            _done, pending = await asyncio.wait(set(self._running.values()), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
