"""Replays the request shapes of public Tess clients (n8n, Pipedream, Langflow, MCP servers, curl)
and asserts the fields they read."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.world import World

TERMINAL = {"succeeded", "failed", "cancelled"}


def poll(http: httpx.Client, execution_id: int, prefix: str = "/api", timeout: float = 20) -> dict[str, Any]:
    """What every Tess client does: GET /agent-responses/{id} until a terminal status."""
    deadline = time.monotonic() + timeout
    while True:
        resp = http.get(f"{prefix}/agent-responses/{execution_id}")
        assert resp.status_code == 200
        body: dict[str, Any] = resp.json()
        if body["status"] in TERMINAL or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_n8n_style_body_flags_and_string_temperature(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    """Inputs at the body root, temperature as a string, waitExecution in the body."""
    resp = http.post(
        f"/api/agents/{world.agent_id}/execute",
        json={"temperature": "0.5", "language": "Spanish", "messages": user("Hola"), "waitExecution": True},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["template_id"] == str(world.agent_id)
    first = body["responses"][0]
    assert first["status"] == "succeeded"
    assert first["output"] == "Hello from the upstream."
    assert first["template_id"] == world.agent_id and isinstance(first["template_id"], int)
    assert first["root_id"] == first["id"]
    assert first["credits"] == pytest.approx((11 * 1.5 + 7 * 4.0) / 1e6)
    assert first["input"] == "Hola"
    assert upstream.last["temperature"] == 0.5
    assert upstream.last["messages"][0]["content"].endswith("answer in Spanish.")


@pytest.mark.parametrize(
    "query", ["waitExecution=true", "wait_execution=true", "waitExecution=True", "wait_execution=1"]
)
def test_wait_flag_in_the_query(http: httpx.Client, world: World, query: str) -> None:
    resp = http.post(f"/agents/{world.agent_id}/execute?{query}", json={"language": "en", "messages": user("x")})
    assert resp.json()["responses"][0]["status"] == "succeeded"


@pytest.mark.parametrize("flag", [{"wait_execution": "false"}, {"waitExecution": 0}, {}])
def test_not_waiting_returns_starting_then_polls_to_succeeded(
    http: httpx.Client, world: World, flag: dict[str, Any]
) -> None:
    resp = http.post(f"/api/agents/{world.agent_id}/execute", json={"language": "en", "messages": user("x"), **flag})
    first = resp.json()["responses"][0]
    assert first["status"] == "starting"
    assert first["output"] is None and first["credits"] is None
    done = poll(http, first["id"])
    assert done["status"] == "succeeded"
    assert done["output"] == "Hello from the upstream."
    assert done["updated_at"] >= done["created_at"]


def test_background_run_survives_the_request(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    """The HTTP request ends at once; the run goes on for the whole slow upstream answer."""
    upstream.delay = 0.1
    upstream.chunks = ["a", "b", "c", "d", "e", "f"]
    resp = http.post(f"/agents/{world.agent_id}/execute", json={"language": "en", "messages": user("x")})
    first = resp.json()["responses"][0]
    assert first["status"] == "starting"
    running = http.get(f"/agent-responses/{first['id']}").json()
    assert running["status"] in ("starting", "running")
    done = poll(http, first["id"])
    assert done["status"] == "succeeded"
    assert done["output"] == "abcdef"


def test_wait_limit_returns_a_non_terminal_status(
    live: Any, world: World, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.support.live import LiveServer

    upstream.delay = 0.3
    upstream.chunks = [f"{i} " for i in range(8)]
    server = LiveServer(world.settings.model_copy(update={"wait_limit_s": 0.5})).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {world.token}"}) as client:
            resp = client.post(
                f"/agents/{world.agent_id}/execute",
                json={"language": "en", "messages": user("x"), "waitExecution": True},
            )
            first = resp.json()["responses"][0]
            assert first["status"] == "running"  # answered at the wait limit, before the run ended
            done = poll(client, first["id"])
            assert done["status"] == "succeeded"
    finally:
        server.stop()


def test_stream_events_are_deltas_of_the_stored_output(
    http: httpx.Client, world: World, upstream: FakeUpstream
) -> None:
    with http.stream(
        "POST", f"/api/agents/{world.agent_id}/execute", json={"language": "en", "messages": user("x"), "stream": True}
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [orjson.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    running = [e for e in events if e["status"] == "running"]
    assert [e["output"] for e in running] == upstream.chunks
    final = events[-1]
    assert final["status"] == "completed" and final["output"] == ""
    assert final["credits"] == pytest.approx((11 * 1.5 + 7 * 4.0) / 1e6)
    stored = http.get(f"/agent-responses/{final['id']}").json()
    assert stored["status"] == "succeeded"
    assert stored["output"] == "".join(e["output"] for e in running)


def test_stream_failure_is_a_failed_event(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    upstream.mode = "error500"
    with http.stream(
        "POST", f"/agents/{world.agent_id}/execute", json={"language": "en", "messages": user("x"), "stream": "true"}
    ) as resp:
        events = [orjson.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1]["status"] == "failed"
    assert "HTTP 500" in events[-1]["error"]
    assert http.get(f"/agent-responses/{events[-1]['id']}").json()["status"] == "failed"


def test_root_id_continuation_with_one_new_message(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    url = f"/api/agents/{world.agent_id}/execute"
    first = http.post(url, json={"language": "en", "messages": user("one"), "wait_execution": True}).json()
    root = first["responses"][0]["id"]
    second = http.post(
        url, json={"language": "en", "root_id": root, "messages": user("two"), "wait_execution": True}
    ).json()["responses"][0]
    assert second["root_id"] == root and second["id"] != root
    assert [m["content"] for m in upstream.last["messages"][1:]] == ["one", "Hello from the upstream.", "two"]
    listed = http.get("/api/agent-responses", params={"root_id": root, "sort": "asc"}).json()
    assert [r["id"] for r in listed["data"]] == [root, second["id"]]


def test_text_agent_renders_its_fields_as_the_prompt(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    resp = http.post(f"/agents/{world.text_agent_id}/execute", json={"topic": "autumn", "waitExecution": True})
    first = resp.json()["responses"][0]
    assert first["status"] == "succeeded"
    assert first["input"] == "Write a haiku about autumn."
    assert upstream.last["messages"] == [{"role": "user", "content": "Write a haiku about autumn."}]


def test_agents_listing_until_last_page(http: httpx.Client, world: World) -> None:
    """per_page=50 and follow pages until last_page; every agent object has questions[]."""
    for i in range(4):
        http.post("/agents", json={"title": f"Paging {i}", "description": "pager"}).raise_for_status()
    seen: list[int] = []
    page = 1
    while True:
        body = http.get("/api/agents", params={"per_page": 2, "page": page, "q": "pag"}).json()
        seen += [a["id"] for a in body["data"]]
        assert all("questions" in a and "instructions" not in a for a in body["data"])
        if page >= body["last_page"]:
            break
        assert body["next_page_url"].endswith(f"page={page + 1}") and "q=pag" in body["next_page_url"]
        page += 1
    assert len(seen) == body["total"] == 4
    assert body["next_page_url"] is None
    big = http.get("/api/agents", params={"per_page": 50}).json()
    assert big["per_page"] == 50 and big["current_page"] == 1 and big["from"] == 1
    assert {"first_page_url", "last_page_url", "links", "path", "prev_page_url", "to"} <= set(big)
    assert world.agent_id in [a["id"] for a in big["data"]]
    assert world.other_agent_id not in [a["id"] for a in big["data"]]


def test_agent_detail_is_the_bare_object(http: httpx.Client, world: World) -> None:
    body = http.get(f"/api/agents/{world.agent_id}").json()
    assert body["id"] == world.agent_id and body["type"] == "chat" and body["active"] == 1
    names = [q["name"] for q in body["questions"]]
    # the request's own fields first (as Tess lists them), then the stored questions
    assert names == ["messages", "root_id", "temperature", "model", "tools", "language", "tone"]
    assert body["created_at"].endswith("Z") and len(body["created_at"]) == len("2025-01-05T19:35:21.000000Z")
    assert "instructions" not in body


def test_agents_type_filter(http: httpx.Client, world: World) -> None:
    texts = http.get("/agents", params={"type": "text"}).json()["data"]
    assert [a["id"] for a in texts] == [world.text_agent_id]
    assert http.get("/agents", params={"type": "video"}).json()["data"] == []  # a Tess type with none here
    assert http.get("/agents", params={"type": "audio"}).status_code == 422
    assert http.get("/agents", params={"per_page": 101}).json()["per_page"] == 100  # clamped
    assert http.get("/agents", params={"page": 0}).json()["errors"]["page"]
