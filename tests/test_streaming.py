"""Streams are not buffered, keep the connection alive while the model is silent, and the local
model serves concurrent streams one at a time in arrival order without cutting any off."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.world import World

BODY = {"messages": [{"role": "user", "content": "hi"}], "language": "English", "stream": True}


def test_each_chunk_reaches_the_client_before_the_next_is_sent(
    live: LiveServer, world: World, upstream: FakeUpstream
) -> None:
    """With an upstream pausing 200 ms between chunks, chunk i arrives before chunk i+1 leaves."""
    upstream.delay = 0.2
    upstream.chunks = ["one ", "two ", "three ", "four "]
    arrived: list[float] = []
    url = f"{live.url}/agents/{world.agent_id}/openai/chat/completions"
    headers = {"Authorization": f"Bearer {world.token}"}
    with httpx.stream("POST", url, json=BODY, headers=headers, timeout=30) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                arrived.append(time.monotonic())
    sent = upstream.chunk_sent_at
    assert len(arrived) == len(sent) == 4
    for i in range(3):
        assert arrived[i] < sent[i + 1], f"chunk {i} was held back until chunk {i + 1} was sent"


@pytest.fixture(scope="module")
def quick_keepalive(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = world.settings.model_copy(update={"sse_keepalive_s": 0.2})
    server = LiveServer(settings).start()
    yield server
    server.stop()


def test_keepalive_comments_before_the_first_token(
    quick_keepalive: LiveServer, world: World, upstream: FakeUpstream
) -> None:
    upstream.first_delay = 1.0
    url = f"{quick_keepalive.url}/agents/{world.agent_id}/openai/chat/completions"
    headers = {"Authorization": f"Bearer {world.token}"}
    with httpx.stream("POST", url, json=BODY, headers=headers, timeout=30) as resp:
        lines = [line for line in resp.iter_lines() if line]
    # keep-alive comments came before the first token, so the headers went out with the first of them
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert first_data >= 2
    assert all(line == ": keep-alive" for line in lines[:first_data])
    assert lines[-1] == "data: [DONE]"


@pytest.mark.model
def test_local_model_serves_concurrent_streams_in_arrival_order(live: LiveServer, world: World) -> None:
    """Three streams sent 150 ms apart: generations never interleave, start in arrival order, and
    every stream runs to its end."""
    url = f"{live.url}/agents/{world.local_agent_id}/openai/chat/completions"
    headers = {"Authorization": f"Bearer {world.token}"}
    spans: dict[int, tuple[float, float]] = {}
    results: dict[int, list[str]] = {}

    def run(i: int) -> None:
        body = {"messages": [{"role": "user", "content": f"Tell me a fact about number {i}."}], "stream": True}
        body["max_tokens"] = 40
        events, times = [], []
        with httpx.stream("POST", url, json=body, headers=headers, timeout=120) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if '"content"' in line:
                        times.append(time.monotonic())
        spans[i] = (times[0], times[-1])
        results[i] = events

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.15)
    for t in threads:
        t.join(120)
    assert sorted(spans, key=lambda i: spans[i][0]) == [0, 1, 2]
    for i in (0, 1):
        assert spans[i][1] <= spans[i + 1][0], "a later stream produced text while an earlier one was running"
    for events in results.values():
        assert events[-1] == "[DONE]"
        chunks = [orjson.loads(e) for e in events[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
