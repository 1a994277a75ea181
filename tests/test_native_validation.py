"""Native routes: 422 with Laravel's error map, Tess message rules, the management API, tenancy,
cancellation."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.sse import BackgroundStream
from tests.support.world import World


def execute(http: httpx.Client, agent_id: int, body: dict[str, Any]) -> httpx.Response:
    return http.post(f"/agents/{agent_id}/execute", json={"waitExecution": True, **body})


def laravel_errors(resp: httpx.Response) -> dict[str, list[str]]:
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "Validation failed"
    assert body["message"]
    return dict(body["errors"])


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}], "messages.0.role"),
        ([{"role": "assistant", "content": "x"}], "messages"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "messages"),
        ([{"role": "user", "content": "x"}, {"role": "user", "content": "y"}], "messages"),
        ([{"role": "user", "content": "a"}, {"role": "developer", "content": "b"}, {"role": "user", "content": "c"}],
         "messages"),
        ([{"role": "user", "content": 3}], "messages.0.content"),
        ([{"role": "tool", "content": "x"}], "messages.0.role"),
        ([], "messages"),
        (None, "messages"),
    ],
)  # fmt: skip
def test_chat_message_rules(http: httpx.Client, world: World, messages: Any, field: str) -> None:
    body: dict[str, Any] = {"language": "en"}
    if messages is not None:
        body["messages"] = messages
    errors = laravel_errors(execute(http, world.agent_id, body))
    assert field in errors
    if field == "messages" and messages:
        assert errors["messages"] == ["Chat messages must be a pair of user/assistant"]


def test_developer_first_then_pairs_is_accepted(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    messages = [
        {"role": "developer", "content": "Be short."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    resp = execute(http, world.agent_id, {"language": "en", "messages": messages})
    assert resp.json()["responses"][0]["status"] == "succeeded"
    assert upstream.last["messages"][1] == {"role": "system", "content": "Be short."}


def test_every_bad_field_at_once(http: httpx.Client, world: World) -> None:
    resp = execute(
        http,
        world.agent_id,
        {
            "messages": [{"role": "system", "content": "x"}],
            "temperature": "0.7",
            "model": "gpt-4o",
            "tools": ["x"],
            "tone": "rude",
            "waitExecution": "perhaps",
        },
    )
    errors = laravel_errors(resp)
    assert set(errors) >= {"messages.0.role", "temperature", "model", "tools", "tone", "language", "waitExecution"}
    assert errors["language"] == ["The language field is required."]
    assert "0, 0.5, 1" in errors["temperature"][0]
    assert resp.json()["message"].startswith("The ") and "more errors" in resp.json()["message"]


def test_unknown_model_is_422_here(http: httpx.Client, world: World) -> None:
    errors = laravel_errors(
        execute(
            http, world.agent_id, {"language": "en", "messages": [{"role": "user", "content": "x"}], "model": "gpt-4o"}
        )
    )
    assert "fake-gpt" in errors["model"][0]


def test_legacy_answers_and_unknown_extras(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    body = {"answers": {"language": "Dutch"}, "messages": [{"role": "user", "content": "x"}], "whatever": {"a": 1}}
    assert execute(http, world.agent_id, body).json()["responses"][0]["status"] == "succeeded"
    assert "Dutch" in upstream.last["messages"][0]["content"]


# management API -------------------------------------------------------------------------------

SPEC = {
    "title": "Summariser",
    "type": "text",
    "description": "Summaries",
    "instructions": "Summarise in {{ words }} words: {{ text }}",
    "questions": [
        {"type": "number", "name": "words", "min": 5, "max": 50, "default": 20},
        {"type": "textarea", "name": "text", "required": True, "max_length": 2000},
        {"type": "multiselect", "name": "styles", "options": ["plain", "bullets"]},
        {"type": "boolean", "name": "formal"},
        {"type": "select", "name": "model", "options": ["fake-gpt"]},
    ],
}


def test_create_update_delete_agent(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    created = http.post("/api/agents", json=SPEC)
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["instructions"] == SPEC["instructions"] and agent["workspace_id"] == world.workspace_id
    out = http.post(
        f"/agents/{agent['id']}/execute", json={"text": "Long text.", "words": "10", "wait_execution": True}
    )
    first = out.json()["responses"][0]
    assert first["input"] == "Summarise in 10 words: Long text."

    patched = http.patch(f"/agents/{agent['id']}", json={"title": "Summary bot", "visibility": "workspace"})
    assert patched.status_code == 200
    assert patched.json()["title"] == "Summary bot" and patched.json()["instructions"] == SPEC["instructions"]
    assert http.get(f"/agents/{agent['id']}").json()["visibility"] == "workspace"

    bad = http.patch(f"/agents/{agent['id']}", json={"instructions": "Hello {{ nobody }}"})
    assert "nobody" in laravel_errors(bad)["instructions"][0]

    assert http.delete(f"/agents/{agent['id']}").status_code == 204
    assert http.get(f"/agents/{agent['id']}").status_code == 404
    assert http.post(f"/agents/{agent['id']}/execute", json={"text": "x"}).status_code == 404
    # its executions stay readable
    assert http.get(f"/agent-responses/{first['id']}").json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "chat"}, "title"),
        ({**SPEC, "type": "image"}, "type"),
        ({**SPEC, "questions": [{"type": "select", "name": "x"}]}, "questions.0"),
        ({**SPEC, "questions": [{"type": "select", "name": "model", "options": ["gpt-99"]}]}, "questions.0"),
        ({**SPEC, "questions": [{"type": "number", "name": "n", "default": "many"}]}, "questions.0"),
        ({**SPEC, "questions": [{"type": "text", "name": "bad name"}]}, "questions.0.name"),
        ({**SPEC, "instructions": "{{ undeclared }}", "questions": []}, "instructions"),
        ({**SPEC, "surprise": 1}, "surprise"),
    ],
)
def test_management_validation(http: httpx.Client, spec: dict[str, Any], field: str) -> None:
    assert field in laravel_errors(http.post("/agents", json=spec))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"words": "many"}, "words"),
        ({"words": 4}, "words"),
        ({"words": 51}, "words"),
        ({"text": "x" * 2001}, "text"),
        ({"styles": ["plain", "fancy"]}, "styles"),
        ({"styles": "plain,fancy"}, "styles"),
        ({"formal": "sometimes"}, "formal"),
        ({"text": None}, "text"),
    ],
)
def test_question_types_are_validated(http: httpx.Client, fields: dict[str, Any], field: str) -> None:
    agent = http.post("/agents", json=SPEC).json()
    body = {"text": "t", **fields}
    assert field in laravel_errors(execute(http, agent["id"], body))


def test_valid_question_forms(http: httpx.Client, upstream: FakeUpstream) -> None:
    spec = {**SPEC, "instructions": "{{ words }}|{{ styles }}|{{ formal }}|{{ text }}"}
    agent = http.post("/agents", json=spec).json()
    body = {"text": "t", "words": "12", "styles": "plain, bullets", "formal": "true"}
    first = execute(http, agent["id"], body).json()["responses"][0]
    assert first["input"] == "12|plain, bullets|True|t"


# tenancy --------------------------------------------------------------------------------------


def test_other_workspace_resources_are_404(live: LiveServer, world: World, http: httpx.Client) -> None:
    mine = execute(http, world.agent_id, {"language": "en", "messages": [{"role": "user", "content": "x"}]}).json()
    mine_id = mine["responses"][0]["id"]
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {world.other_token}"}) as bob:
        assert bob.get(f"/agents/{world.agent_id}").status_code == 404
        assert bob.patch(f"/agents/{world.agent_id}", json={"title": "x"}).status_code == 404
        assert bob.delete(f"/agents/{world.agent_id}").status_code == 404
        assert bob.post(f"/agents/{world.agent_id}/execute", json={}).status_code == 404
        assert bob.get(f"/agent-responses/{mine_id}").status_code == 404
        assert bob.post(f"/agent-responses/{mine_id}/cancel").status_code == 404
        assert mine_id not in [r["id"] for r in bob.get("/agent-responses", params={"per_page": 100}).json()["data"]]
        root = {"root_id": mine_id, "language": "en", "messages": [{"role": "user", "content": "x"}]}
        assert bob.post(f"/agents/{world.other_agent_id}/execute", json=root).status_code == 404
    assert http.get(f"/agent-responses/{mine_id}").status_code == 200


def test_root_of_another_agent_is_404(http: httpx.Client, world: World) -> None:
    first = execute(http, world.agent_id, {"language": "en", "messages": [{"role": "user", "content": "x"}]}).json()
    body = {"root_id": first["responses"][0]["id"], "messages": [{"role": "user", "content": "x"}]}
    assert http.post(f"/agents/{world.local_agent_id}/execute", json=body).status_code == 404


# agent responses ------------------------------------------------------------------------------


def test_cancel_a_background_run(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    upstream.delay = 0.2
    upstream.chunks = [f"{i} " for i in range(40)]
    first = http.post(
        f"/agents/{world.agent_id}/execute", json={"language": "en", "messages": [{"role": "user", "content": "x"}]}
    )
    run_id = first.json()["responses"][0]["id"]
    time.sleep(0.5)
    cancelled = http.post(f"/agent-responses/{run_id}/cancel")
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert body["output"].startswith("0 ")
    assert upstream.disconnected.wait(5)
    again = http.post(f"/agent-responses/{run_id}/cancel")
    assert again.status_code == 409


def test_cancel_a_stream_ends_it_with_a_cancelled_event(
    live: LiveServer, world: World, upstream: FakeUpstream, http: httpx.Client
) -> None:

    upstream.delay = 0.2
    upstream.chunks = [f"{i} " for i in range(40)]
    stream = BackgroundStream(
        f"{live.url}/agents/{world.agent_id}/execute",
        {"language": "en", "messages": [{"role": "user", "content": "x"}], "stream": True},
        {"Authorization": f"Bearer {world.token}"},
    )
    stream.wait_for(2)
    events = stream.events
    resp = http.post(f"/agent-responses/{events[0]['id']}/cancel")
    stream.join()
    assert resp.json()["status"] == "cancelled"
    assert events[-1]["status"] == "cancelled"


def test_list_filters(http: httpx.Client, world: World) -> None:
    body = {"language": "en", "messages": [{"role": "user", "content": "x"}]}
    ids = [execute(http, world.agent_id, body).json()["responses"][0]["id"] for _ in range(3)]
    desc = http.get("/agent-responses", params={"agent_id": world.agent_id, "per_page": 100}).json()["data"]
    assert [r["id"] for r in desc] == sorted([r["id"] for r in desc], reverse=True)
    assert set(ids) <= {r["id"] for r in desc}
    succeeded = http.get("/agent-responses", params={"status": "succeeded", "per_page": 100}).json()["data"]
    assert all(r["status"] == "succeeded" for r in succeeded)
    assert http.get("/agent-responses", params={"status": "weird"}).status_code == 422
    assert http.get("/agent-responses", params={"sort": "sideways"}).status_code == 422
    assert http.get("/agent-responses", params={"agent_id": "x"}).status_code == 422
