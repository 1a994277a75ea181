"""Several server processes sharing PostgreSQL and Redis behave as one server: limits hold
exactly across them, a cancel reaches the process that runs the execution, and what one process
stored the other reads. Runs when OPENTESS_TEST_POSTGRES_URL and OPENTESS_TEST_REDIS_URL are set."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from opentess.errors import RateLimited
from opentess.limits import RedisLimiter
from tests.support.backends import REDIS_ENV, postgres_database_or_skip, redis_url
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import free_port, serve, write_config
from tests.support.sse import BackgroundStream
from tests.support.world import World, make_settings, seed, unlimited_token

CHAT = {"language": "en", "messages": [{"role": "user", "content": "x"}]}
RPM = 5


@pytest.fixture(scope="module")
def redis() -> str:
    url = redis_url()
    if url is None:
        pytest.skip(f"Redis tests need {REDIS_ENV}")
    return url


@pytest.fixture(scope="module")
def pg() -> Iterator[str]:
    with postgres_database_or_skip() as fresh:
        yield fresh


@pytest.fixture(scope="module")
def cluster(
    pg: str, redis: str, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[World, list[str], dict[str, str]]]:
    """Two `opentess serve` processes on different ports, one database, one Redis."""
    tmp = tmp_path_factory.mktemp("cluster")
    world = seed(make_settings(tmp / "data", upstream.url, database_url=pg))
    world.token = unlimited_token(world)
    env = {
        "OPENTESS_DATABASE_URL": pg,
        "OPENTESS_REDIS_URL": redis,
        "OPENTESS_REDIS_PREFIX": f"opentess-test-{secrets.token_hex(4)}:",
        "OPENTESS_RATE_LIMIT_RPM": str(RPM),
    }
    config = write_config(tmp / "c.toml", upstream.url)
    ports = [free_port(), free_port()]
    procs = [serve(config, tmp / f"data{i}", port, env=env) for i, port in enumerate(ports)]
    try:
        yield world, [f"http://127.0.0.1:{p}" for p in ports], env
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.communicate(timeout=30)


def _token(world: World, base: str, rpm: int | None = None) -> str:
    body: dict[str, Any] = {"name": "cluster"}
    if rpm is not None:
        body["rpm_limit"] = rpm
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {world.token}"}) as http:
        resp = http.post("/tokens", json=body)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


def test_rate_limit_holds_exactly_across_processes(cluster: tuple[World, list[str], dict[str, str]]) -> None:
    world, (a, b), _ = cluster
    token = _token(world, a)
    headers = {"Authorization": f"Bearer {token}"}
    codes = [httpx.get(f"{(a, b)[i % 2]}/agents", headers=headers).status_code for i in range(RPM + 2)]
    assert codes == [200] * RPM + [429, 429]


def test_execution_created_on_a_is_readable_on_b(cluster: tuple[World, list[str], dict[str, str]]) -> None:
    world, (a, b), _ = cluster
    headers = {"Authorization": f"Bearer {_token(world, a, rpm=100)}"}
    created = httpx.post(f"{a}/agents/{world.agent_id}/execute", json={**CHAT, "waitExecution": True}, headers=headers)
    first = created.json()["responses"][0]
    assert first["status"] == "succeeded"
    read = httpx.get(f"{b}/agent-responses/{first['id']}", headers=headers).json()
    assert read == first


def test_cancel_sent_to_a_stops_a_stream_served_by_b(
    cluster: tuple[World, list[str], dict[str, str]], upstream: FakeUpstream
) -> None:
    world, (a, b), _ = cluster
    headers = {"Authorization": f"Bearer {_token(world, a, rpm=100)}"}
    upstream.delay = 0.2
    upstream.chunks = [f"{i} " for i in range(100)]
    stream = BackgroundStream(f"{b}/agents/{world.agent_id}/execute", {**CHAT, "stream": True}, headers)
    stream.wait_for(2)
    events = stream.events
    cancelled = httpx.post(f"{a}/agent-responses/{events[0]['id']}/cancel", headers=headers, timeout=30)
    stream.join()
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert events[-1]["status"] == "cancelled"
    assert upstream.disconnected.wait(5)


def test_redis_limiter_is_exact_under_concurrency(redis: str) -> None:
    """Two limiters (two processes) racing 40 hits at a limit of 7: exactly 7 get through."""

    async def race() -> int:
        prefix = f"opentess-test-{secrets.token_hex(4)}:"
        limiters = [RedisLimiter(redis, prefix), RedisLimiter(redis, prefix)]

        async def one(i: int) -> bool:
            try:
                await limiters[i % 2].hit([("token:1", 7)])
                return True
            except RateLimited:
                return False

        try:
            return sum(await asyncio.gather(*(one(i) for i in range(40))))
        finally:
            for limiter in limiters:
                await limiter.aclose()

    assert asyncio.run(race()) == 7


def test_workers_share_the_port_and_the_metrics(redis: str, upstream: FakeUpstream, tmp_path: Path) -> None:
    """`serve --workers 2`: both workers answer on one port, /metrics counts every request
    whichever worker served it, and SIGTERM stops all of them with status 0."""
    with postgres_database_or_skip() as database:
        world = seed(make_settings(tmp_path / "data", upstream.url, database_url=database))
        env = {"OPENTESS_DATABASE_URL": database, "OPENTESS_REDIS_URL": redis}
        port = free_port()
        proc = serve(write_config(tmp_path / "c.toml", upstream.url), tmp_path, port, "--workers", "2", env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {world.token}"}
            for _ in range(20):
                with httpx.Client() as fresh_connection:
                    assert fresh_connection.get(f"{base}/agents/{world.agent_id}", headers=headers).status_code == 200
            text = httpx.get(f"{base}/metrics").text
            total = sum(
                s.value
                for f in text_string_to_metric_families(text)
                if f.name == "opentess_requests"
                for s in f.samples
                if s.name == "opentess_requests_total" and s.labels["route"] == "/agents/{agent_id}"
            )
            assert total == 20
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        assert proc.returncode == 0


def test_a_token_revoked_on_a_is_refused_by_b_within_a_second(
    cluster: tuple[World, list[str], dict[str, str]],
) -> None:
    world, (a, b), _ = cluster
    token = _token(world, a, rpm=100)
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{b}/agents", headers=headers).status_code == 200  # cached on B
    admin = {"Authorization": f"Bearer {world.token}"}
    own = [t for t in httpx.get(f"{a}/tokens", headers=admin).json()["data"] if t["prefix"] == token[:10]]
    assert httpx.delete(f"{a}/tokens/{own[0]['id']}", headers=admin).status_code == 200
    time.sleep(1.1)
    assert httpx.get(f"{b}/agents", headers=headers).status_code == 401
