"""Lifecycle across process stops: a killed server's runs are failed at the next start; a server
that shuts down cancels its background runs cleanly."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.processes import free_port, serve, write_config
from tests.support.world import World, execution, make_settings, seed


def test_a_killed_servers_runs_are_failed_after_the_next_start(tmp_path: Path, upstream: FakeUpstream) -> None:
    world = seed(make_settings(tmp_path / "data", upstream.url))
    config = write_config(tmp_path / "opentess.toml", upstream.url)
    upstream.mode = "hang"
    port = free_port()
    proc = serve(config, tmp_path / "data", port)
    try:
        resp = httpx.post(
            f"http://127.0.0.1:{port}/agents/{world.agent_id}/execute",
            json={"language": "en", "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {world.token}"},
        )
        run_id = resp.json()["responses"][0]["id"]
        time.sleep(0.3)
        assert execution(world.settings, run_id)["status"] == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)  # and close its pipe
    assert execution(world.settings, run_id)["status"] == "running"  # nobody was left to end it
    proc = serve(config, tmp_path / "data", port)
    try:
        after = httpx.get(
            f"http://127.0.0.1:{port}/agent-responses/{run_id}", headers={"Authorization": f"Bearer {world.token}"}
        ).json()
        assert after["status"] == "failed"
        assert after["error"] == "interrupted by server restart"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode()
    assert "1 execution(s) interrupted" in out


def test_shutdown_cancels_background_runs(world: World, upstream: FakeUpstream) -> None:
    upstream.delay = 0.2
    upstream.chunks = [f"{i} " for i in range(50)]
    server = LiveServer(world.settings).start()
    try:
        resp = httpx.post(
            f"{server.url}/agents/{world.agent_id}/execute",
            json={"language": "en", "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {world.token}"},
        )
        run_id = resp.json()["responses"][0]["id"]
        time.sleep(0.5)
    finally:
        server.stop()
    stored = execution(world.settings, run_id)
    assert stored["status"] == "cancelled"
    assert stored["error"] == "cancelled: the server shut down"
    assert str(stored["output"]).startswith("0 ")


def test_the_garbage_of_a_burst_is_collected_once_the_server_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full collection stops the event loop: it runs only after a whole quiet period that
    followed requests — never while requests keep coming, never twice for one burst."""
    import asyncio

    from opentess import server

    collected: list[int] = []
    served = [0]
    monkeypatch.setattr(server, "TRIM_EVERY_S", 0.0)
    monkeypatch.setattr(server, "_malloc_trim", None)  # each look is then one turn of the loop
    monkeypatch.setattr(server.gc, "collect", lambda *a: collected.append(served[0]) or 0)

    async def go() -> None:
        task = asyncio.ensure_future(server.release_freed_memory(lambda: served[0]))
        await asyncio.sleep(0)
        for _ in range(5):  # busy: a request between every two looks
            served[0] += 1
            await asyncio.sleep(0)
        assert collected == []
        for _ in range(50):  # quiet
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(go())
    assert collected == [5]
