"""Durable background jobs: run once across processes, retried with backoff, recovered from a
process that died, deduplicated, and enqueued only with the write that causes them; on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from opentess.db.engine import make_engine, migrate
from opentess.jobs import Job, JobContext, JobKind, JobQueue, JobRunner, enqueue
from opentess.settings import Settings


async def _until(queue: JobQueue, done: int = 0, idle: bool = False) -> dict[str, int]:
    """Poll the table (the thing under test, in another task or process) until it says so."""
    while True:
        counts = await queue.counts()
        if (idle and not counts.get("queued", 0) + counts.get("running", 0)) or (
            done and counts.get("done", 0) >= done
        ):
            return counts
        await asyncio.sleep(0.02)


def _settings(tmp_path: Path, database_url: str | None) -> Settings:
    return Settings(data_dir=tmp_path, database_url=database_url)


async def _fresh(settings: Settings) -> JobQueue:
    engine = make_engine(settings)
    await migrate(engine)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM jobs"))  # the PostgreSQL suite shares one database
    return JobQueue(engine)


def test_each_job_runs_once_across_runners(tmp_path: Path, database_url: str | None) -> None:
    """Two runners on two engines (as two processes would be) share 200 jobs: each runs once."""
    settings = _settings(tmp_path, database_url)
    ran: Counter[int] = Counter()

    async def work(job: Job, _ctx: JobContext) -> None:
        ran[job.payload["n"]] += 1
        await asyncio.sleep(0)

    async def go() -> dict[str, int]:
        queue = await _fresh(settings)
        other = JobQueue(make_engine(settings))
        runners = [JobRunner(q, None, concurrency=8, poll_s=0.02) for q in (queue, other)]
        for runner in runners:
            runner.register(JobKind("count", work))
        for n in range(200):
            await queue.enqueue("count", {"n": n})
        for runner in runners:
            runner.start()
        await _until(queue, done=200)
        for runner in runners:
            await runner.aclose()
        counts = await queue.counts()
        await queue.engine.dispose()
        await other.engine.dispose()
        return counts

    assert asyncio.run(go()) == {"done": 200}
    assert sorted(ran) == list(range(200)) and set(ran.values()) == {1}


def test_failures_are_retried_then_dead(tmp_path: Path, database_url: str | None) -> None:
    settings = _settings(tmp_path, database_url)
    attempts: list[tuple[int, int]] = []
    dead: list[str] = []

    async def flaky(job: Job, _ctx: JobContext) -> None:
        attempts.append((job.payload["n"], job.attempts))
        if job.payload["n"] == 1 or job.attempts < 3:
            raise RuntimeError(f"attempt {job.attempts} failed")

    async def on_dead(job: Job, _ctx: JobContext, error: str) -> None:
        dead.append(f"{job.payload['n']}: {error}")

    async def go() -> dict[str, int]:
        queue = await _fresh(settings)
        runner = JobRunner(queue, None, poll_s=0.02, backoff_scale=0.001)
        runner.register(JobKind("flaky", flaky, max_attempts=4, delays_s=(1, 2, 4), on_dead=on_dead))
        await queue.enqueue("flaky", {"n": 0})
        await queue.enqueue("flaky", {"n": 1})
        runner.start()
        await _until(queue, idle=True)
        await runner.aclose()
        counts = await queue.counts()
        await queue.engine.dispose()
        return counts

    assert asyncio.run(go()) == {"done": 1, "dead": 1}
    assert sorted(a for n, a in attempts if n == 0) == [1, 2, 3]
    assert sorted(a for n, a in attempts if n == 1) == [1, 2, 3, 4]
    assert dead == ["1: RuntimeError: attempt 4 failed"]


def test_a_job_left_by_a_dead_runner_is_taken_over(tmp_path: Path, database_url: str | None) -> None:
    """A runner claims a job and dies without finishing it: once its lease passes, another
    runner runs it."""
    settings = _settings(tmp_path, database_url)
    ran: list[str] = []

    async def work(job: Job, _ctx: JobContext) -> None:
        ran.append(job.payload["name"])

    async def go() -> dict[str, int]:
        queue = await _fresh(settings)
        kind = JobKind("orphan", work, lease_s=0.2)
        await queue.enqueue("orphan", {"name": "left behind"})
        claimed = await queue.claim("dead-runner", {"orphan": kind}, 5)  # then the process dies
        assert [j.payload["name"] for j in claimed] == ["left behind"]
        assert await queue.claim("eager-runner", {"orphan": kind}, 5) == []  # leased: not due
        runner = JobRunner(queue, None, poll_s=0.05)
        runner.register(kind)
        runner.start()
        await _until(queue, done=1)
        await runner.aclose()
        late = await queue.finish("dead-runner", claimed[0], kind, None)  # it comes back: too late
        counts = await queue.counts()
        await queue.engine.dispose()
        assert late == "lost"
        return counts

    assert asyncio.run(go()) == {"done": 1}
    assert ran == ["left behind"]


def test_dedupe_keys_and_transactional_enqueue(tmp_path: Path, database_url: str | None) -> None:
    settings = _settings(tmp_path, database_url)

    async def go() -> dict[str, int]:
        queue = await _fresh(settings)
        for _ in range(3):
            await queue.enqueue("once", {}, dedupe_key="delivery-7")

        async def failing_write() -> None:
            async with queue.engine.begin() as conn:
                await enqueue(conn, "never", {})
                raise RuntimeError("the write that would have caused it failed")

        with pytest.raises(RuntimeError):
            await failing_write()
        counts = await queue.counts()
        await queue.engine.dispose()
        return counts

    assert asyncio.run(go()) == {"queued": 1}
