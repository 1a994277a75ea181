"""One regression test per finding of the hardening issue (a hostile template, unbounded memory,
token authority, runs that never end, conversation limits, integers, other 500s, the smaller
items), and the crafted-input corpus kept as a parametrised test: every class stays a 4xx."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opentess.db.engine import make_engine
from opentess.store import Store, close_store
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.waiting import wait_until
from tests.support.world import World, execution, make_settings, seed

CHAT = {"language": "en", "messages": [{"role": "user", "content": "hi"}]}
PATIENCE_S = 30.0


@pytest.fixture(scope="module")
def hard(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, World]]:
    world = seed(
        make_settings(
            tmp_path_factory.mktemp("hard"),
            upstream.url,
            template_time_limit_s=3.0,
            max_input_chars=3000,
            heartbeat_s=0.2,
            db_busy_timeout_s=0.2,
            public_url="https://agents.example.com",
        )
    )
    server = LiveServer(world.settings).start()
    yield server, world
    server.stop()


def client(server: LiveServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def create_agent(http: httpx.Client, instructions: str, *questions: dict[str, Any], **extra: Any) -> httpx.Response:
    body = {
        "title": "Hostile",
        "instructions": instructions,
        "questions": [{"type": "select", "name": "model", "options": ["fake-gpt"]}, *questions],
        **extra,
    }
    return http.post("/agents", json=body)


# 1. one template freezes the whole server ------------------------------------------------------


def test_a_hostile_template_does_not_hold_other_requests(hard: tuple[LiveServer, World]) -> None:
    """A template that loops for as long as its input says: another workspace's request is
    answered while it renders, and the call itself gets a 4xx naming ``instructions``."""
    server, world = hard
    loops = "{% for i in range(count) %}{% for j in range(100000) %}{% endfor %}{% endfor %}ok"
    with client(server, world.token) as http:
        agent = create_agent(http, loops, {"type": "number", "name": "count", "default": 1, "max": 100000}).json()
        done: list[str] = []
        answers: dict[str, httpx.Response] = {}

        def hostile() -> None:
            answers["hostile"] = http.post(
                f"/agents/{agent['id']}/openai/chat/completions", json={**CHAT, "count": 100000}
            )
            done.append("hostile")

        thread = threading.Thread(target=hostile)
        thread.start()
        time.sleep(0.3)  # let it reach the renderer (not asserted: only the order below is)
        with client(server, world.other_token) as other:
            assert other.get("/agents").status_code == 200
        done.append("other")
        thread.join(PATIENCE_S)
    assert done == ["other", "hostile"], answers["hostile"].text
    err = answers["hostile"].json()["error"]
    assert answers["hostile"].status_code == 400 and err["param"] == "instructions"
    assert "longer than 3 s" in err["message"]


# 2. unbounded memory and disk through templates ----------------------------------------------------


def test_templates_that_explode_are_refused_at_save(hard: tuple[LiveServer, World]) -> None:
    server, world = hard
    with client(server, world.token) as http:
        for source in ("{{ 'A' * 5000000 }}{{ product }}", "{{ 2 ** 100000 }}", "{{ temperature }}{{ messages }}"):
            resp = create_agent(http, source, {"type": "text", "name": "product"})
            assert resp.status_code == 422, source
            assert resp.json()["errors"]["instructions"]
        too_long = create_agent(http, "x" * 100_001)
        assert too_long.status_code == 422 and "100000" in too_long.json()["errors"]["instructions"][0]


def test_rendered_instructions_count_against_the_input_limit(hard: tuple[LiveServer, World]) -> None:
    server, world = hard
    with client(server, world.token) as http:
        agent = create_agent(http, "{{ pad }}", {"type": "text", "name": "pad"}).json()
        resp = http.post(f"/agents/{agent['id']}/openai/chat/completions", json={**CHAT, "pad": "p" * 2999})
    assert resp.status_code == 413
    assert "instructions 2999" in resp.json()["error"]["message"]


# 4. a token can extend and unlimit itself ------------------------------------------------------------


def test_a_token_cannot_outlive_or_outgrow_itself(hard: tuple[LiveServer, World]) -> None:
    server, world = hard

    async def operator_token() -> tuple[int, str]:
        store = Store(make_engine(world.settings))
        try:
            record, secret = await store.tokens.create(
                world.user_id, "limited", expires_in_days=1, rpm_limit=50, concurrency_limit=2
            )
            return record.id, secret
        finally:
            await close_store(store)

    limited_id, limited = asyncio.run(operator_token())
    with client(server, limited) as http:
        child = http.post("/tokens", json={"name": "child"})
        assert child.status_code == 201
        body = child.json()
        assert body["expires_at"] is not None and (body["rpm_limit"], body["concurrency_limit"]) == (50, 2)
        assert body["parent_id"] == limited_id
        for ask in ({"expires_in_days": 2}, {"rpm_limit": 51}, {"concurrency_limit": 3}):
            refused = http.post("/tokens", json={"name": "wider", **ask})
            assert refused.status_code == 403, ask
        assert http.post("/tokens", json={"rpm_limit": 10}).json()["rpm_limit"] == 10
        own = http.patch(f"/tokens/{limited_id}", json={"rpm_limit": 10**9})
        assert own.status_code == 403 and "own limits" in own.json()["message"]
        assert http.patch(f"/tokens/{limited_id}", json={"name": "renamed"}).status_code == 200
        sibling = body["id"]
        assert http.patch(f"/tokens/{sibling}", json={"rpm_limit": 5}).json()["rpm_limit"] == 5
        assert http.patch(f"/tokens/{sibling}", json={"rpm_limit": 6}).status_code == 403
        assert http.patch(f"/tokens/{sibling}", json={"rpm_limit": None}).status_code == 403
        grandchild = httpx.post(
            f"{server.url}/tokens", json={"name": "g"}, headers={"Authorization": f"Bearer {body['token']}"}
        ).json()
        # revoking the operator's token revokes everything made from it
        with client(server, world.token) as admin:
            assert admin.delete(f"/tokens/{limited_id}").status_code == 200
    for secret in (body["token"], grandchild["token"]):
        assert httpx.get(f"{server.url}/agents", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


# 5. a failed write at the end of a run leaves it running forever --------------------------------------


def test_a_run_whose_end_cannot_be_stored_is_released_and_stored_later(
    hard: tuple[LiveServer, World], upstream: FakeUpstream
) -> None:
    server, world = hard
    upstream.delay = 0.3
    upstream.chunks = ["a", "b", "c", "d"]
    db = world.settings.data_dir / "opentess.db"
    lock = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    with client(server, world.token) as http:
        with http.stream("POST", f"/agents/{world.agent_id}/execute", json={**CHAT, "stream": True}) as resp:
            lines = resp.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            execution_id = int(first.split('"id":')[1].split(",")[0])
            lock.execute("BEGIN EXCLUSIVE")  # another process holds the database
            rest = [line for line in lines if line.startswith("data:")]
        assert '"status":"completed"' in rest[-1]  # the caller still gets the answer
        cancel = http.post(f"/agent-responses/{execution_id}/cancel")
        lock.execute("COMMIT")
        lock.close()
        assert cancel.status_code in (503, 409)  # never 200 for a run whose end is not stored
        wait_until(
            lambda: http.get(f"/agent-responses/{execution_id}").json()["status"] != "running",
            "the end of the run is stored once the database is back",
        )
        stored = http.get(f"/agent-responses/{execution_id}").json()
    assert stored["status"] == "succeeded" and stored["output"] == "abcd"


# 6. max_input_chars bypassed through root_id ---------------------------------------------------------


def test_conversations_count_their_history_and_store_it_once(hard: tuple[LiveServer, World]) -> None:
    server, world = hard
    with client(server, world.token) as http:
        url = f"/agents/{world.agent_id}/openai/chat/completions"
        first = http.post(url, json={**CHAT, "messages": [{"role": "user", "content": "x" * 900}]}).json()
        root = first["agent_response"]["id"]
        second = http.post(url, json={**CHAT, "root_id": root, "messages": [{"role": "user", "content": "y" * 900}]})
        assert second.status_code == 200
        third = http.post(url, json={**CHAT, "root_id": root, "messages": [{"role": "user", "content": "z" * 1200}]})
    assert third.status_code == 413 and third.json()["error"]["param"] == "root_id"
    stored = execution(world.settings, second.json()["agent_response"]["id"])
    assert [m["role"] for m in stored["messages"]] == ["system", "user"]  # no copy of the history
    assert stored["context"]["conversation"]["executions"] == [root]


# 7 and 8. integers, types and shapes that were 500s -----------------------------------------------------

BIG = "9223372036854775808"
CORPUS: list[tuple[str, str, Any, dict[str, str]]] = [
    ("GET", f"/agents/{BIG}", None, {}),
    ("GET", "/agents/99999999999999999999", None, {}),
    ("GET", "/agents/٣", None, {}),
    ("POST", "/agents/٣/openai/chat/completions", CHAT, {}),
    ("POST", f"/agents/{BIG}/openai/chat/completions", CHAT, {}),
    ("GET", "/agents%2f1", None, {}),
    ("GET", "/agents", None, {"x-workspace-id": BIG}),
    ("GET", "/agents", None, {"x-workspace-id": "9" * 100_000}),
    ("GET", "/agents", None, {"x-workspace-id": "²".encode()}),  # type: ignore[dict-item]
    ("GET", "/agents?page=" + "9" * 30, None, {}),
    ("GET", "/agents?page=²", None, {}),
    ("GET", "/agent-responses?agent_id=99999999999999999999", None, {}),
    ("GET", "/agent-responses?root_id=²", None, {}),
    ("POST", "/tokens", {"rpm_limit": 2**63}, {}),
    ("POST", "/tokens", {"concurrency_limit": 2**64}, {}),
    ("POST", "/tokens", {"expires_in_days": 3e6}, {}),
    ("POST", "/agents/{agent}/openai/chat/completions", {**CHAT, "root_id": 99999999999999999999}, {}),
    ("POST", "/agents/{agent}/openai/chat/completions", {**CHAT, "root_id": "²"}, {}),
    ("POST", "/agents/{agent}/execute", {**CHAT, "root_id": BIG}, {}),
    ("POST", "/agents/{agent}/openai/chat/completions", {**CHAT, "messages": [{"role": ["user"], "content": "x"}]}, {}),
    ("POST", "/agents/{agent}/openai/chat/completions", {**CHAT, "messages": [{"role": {}, "content": "x"}]}, {}),
    ("POST", "/agents/{agent}/execute", {**CHAT, "messages": [{"role": ["user"], "content": "x"}]}, {}),
    ("POST", "/agents/{array_agent}/execute", {"items": [[[[[[[[]]]]]]]] * 1}, {}),
    ("POST", "/agents", {"title": "t", "instructions": "{{ 2 ** 100000 }}"}, {}),
    ("POST", "/agents", {"title": "t", "instructions": "{% include 'x' %}"}, {}),
    ("POST", "/agents", {"title": "t", "instructions": "{{ 1/0 }}"}, {}),
    ("PATCH", "/tokens/" + BIG, {"name": "x"}, {}),
    ("DELETE", "/agent-responses", None, {}),
]


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(("method", "path", "body", "headers"), CORPUS, ids=[f"{m} {p[:50]}" for m, p, _, _ in CORPUS])
def test_crafted_inputs_are_4xx(
    hard: tuple[LiveServer, World], method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    server, world = hard
    with client(server, world.token) as http:
        array_agent = create_agent(http, "", {"type": "array", "name": "items"}).json()["id"]
        target = path.format(agent=world.agent_id, array_agent=array_agent)
        if "array_agent" in path:
            body = {**CHAT, "items": _deep(300)}
        resp = http.request(method, target, json=body, headers=headers)
        if "array_agent" in path:
            assert "nested more than 32 levels" in resp.json()["errors"]["items"][0]
        assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
        assert resp.headers["content-type"].startswith("application/json")
        assert http.get("/healthz").status_code == 200


def test_405_names_the_allowed_methods(hard: tuple[LiveServer, World]) -> None:
    server, world = hard
    with client(server, world.token) as http:
        resp = http.delete("/agent-responses")
    assert resp.status_code == 405 and resp.headers["allow"] == "GET"


def test_an_unexpected_error_closes_the_connection_cleanly(hard: tuple[LiveServer, World]) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from opentess.api.app import create_app

    app = create_app(hard[1].settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    assert isinstance(app, FastAPI)
    with TestClient(app, raise_server_exceptions=False) as test:
        resp = test.get("/boom")
    assert resp.status_code == 500 and resp.headers["connection"] == "close"
    assert resp.json() == {"message": "Internal server error", "error": "Server error"}


# 9. the smaller items -----------------------------------------------------------------------------


def test_page_links_use_the_public_url_not_the_host_header(hard: tuple[LiveServer, World]) -> None:
    server, world = hard
    with client(server, world.token) as http:
        body = http.get("/agents", headers={"Host": "evil.example"}).json()
        slash = http.get("/agents/", headers={"Host": "evil.example"})
    assert body["path"] == "https://agents.example.com/agents"
    assert "evil" not in str(body)
    assert slash.status_code == 200 and "location" not in slash.headers


def test_an_inactive_agent_cannot_run(hard: tuple[LiveServer, World]) -> None:
    server, world = hard
    with client(server, world.token) as http:
        agent = create_agent(http, "", active=False).json()
        oa = http.post(f"/agents/{agent['id']}/openai/chat/completions", json=CHAT)
        native = http.post(f"/agents/{agent['id']}/execute", json=CHAT)
        assert http.get(f"/agents/{agent['id']}").status_code == 200  # still readable and editable
    assert oa.status_code == 409 and "inactive" in oa.json()["error"]["message"]
    assert native.status_code == 409 and native.json()["error"] == "Conflict"


def test_foreign_and_missing_agents_take_the_same_path() -> None:
    """The hot path's agent cache is keyed by workspace and remembers misses: a foreign id and a
    missing id each cost exactly one database read per second."""
    from opentess.errors import AgentNotFound
    from opentess.store.agents import AgentStore

    reads: list[tuple[int, int | None]] = []

    class Counting(AgentStore):
        async def visible(self, agent_id: int, workspace_id: int) -> Any:
            reads.append((agent_id, workspace_id))
            raise AgentNotFound()

    async def go() -> None:
        store = Counting(None)  # type: ignore[arg-type]
        for agent_id in (5, 5, 10**6, 10**6):
            with pytest.raises(AgentNotFound):
                await store.get_recent(agent_id, 1)

    asyncio.run(go())
    assert reads == [(5, 1), (10**6, 1)]
