"""The public Tess clients' own request flows, replayed as they send them (docs: the notes in
docs/api.md, "Clients"): Langflow's Execute Agent, Pipedream's template actions, the n8n node's
agent and execution listings; and the agent shapes real agents have (hyphenated field names,
public agents)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.world import World

LANGFLOW_HEADERS = {"accept": "*/*", "Content-Type": "application/json"}


def _agent(http: httpx.Client, **spec: Any) -> dict[str, Any]:
    resp = http.post("/agents", json=spec)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_langflow_execute_agent_flow(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    """Langflow reads the agent's questions, builds one field per question (a message box for
    `messages`, `root_id` sent as 0 when empty, a required select set to its first option),
    executes with ?waitExecution=true and reads the output once."""
    agent = _agent(
        http,
        title="Copywriter",
        instructions='Write for {{ inputs["nome-da-empresa"] }}. CTA: {{ inputs["call-to-action"] }}.',
        questions=[
            {"type": "select", "name": "temperature", "options": ["0", "0.5", "1"], "default": "0.5"},
            {"type": "select", "name": "model", "options": ["fake-gpt"]},
            {"type": "text", "name": "nome-da-empresa", "required": True},
            {"type": "text", "name": "call-to-action"},
        ],
    )
    shown = http.get(f"/api/agents/{agent['id']}", headers=LANGFLOW_HEADERS).json()
    questions = {q["name"]: q for q in shown["questions"]}
    assert questions["messages"] == {
        "type": "array",
        "name": "messages",
        "description": "The conversation: user and assistant messages, ending with the user's",
        "required": True,
    }
    assert questions["root_id"]["type"] == "number" and questions["root_id"]["required"] is False
    assert questions["temperature"]["options"][0] == "0.5"  # the default first: Langflow pre-selects it
    body: dict[str, Any] = {}
    for q in shown["questions"]:
        if q["name"] == "messages":
            body["messages"] = [{"role": "user", "content": "Write a slogan"}]
        elif q["type"] == "number":
            body[q["name"]] = 0
        elif q["type"] == "select" and q["required"] is False and q.get("options"):
            body[q["name"]] = q["options"][0]
    body["nome-da-empresa"] = "ACME"
    resp = http.post(f"/api/agents/{agent['id']}/execute?waitExecution=true", json=body, headers=LANGFLOW_HEADERS)
    assert resp.status_code == 200, resp.text
    first = resp.json()["responses"][0]
    assert first["status"] in ("succeeded", "failed", "error")
    output = http.get(f"/api/agent-responses/{first['id']}", headers=LANGFLOW_HEADERS).json().get("output", "")
    assert output == "Hello from the upstream."
    assert upstream.last["messages"][0] == {"role": "system", "content": "Write for ACME. CTA: ."}
    missing = http.get("/api/agents/999999999", headers=LANGFLOW_HEADERS)
    assert missing.status_code == 404 and missing.json().get("questions", []) == []


def test_pipedream_template_actions(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    """Pipedream's app calls only the legacy `templates` names, sends per_page up to 1000, and
    turns every question except numbers into a string — `messages` included."""
    listing = http.get("/api/templates", params={"q": "", "type": "chat", "per_page": 1000})
    assert listing.status_code == 200 and listing.json()["per_page"] == 100
    assert world.agent_id in [a["id"] for a in listing.json()["data"]]
    props = http.get(f"/api/templates/{world.agent_id}").json()
    assert {q["name"] for q in props["questions"]} >= {"messages", "language"}
    executed = http.post(
        f"/api/templates/{world.agent_id}/execute",
        json={"messages": "hello", "language": "French", "temperature": "0.5", "waitExecution": "true"},
    )
    assert executed.status_code == 200, executed.text
    response = executed.json()["responses"][0]
    assert upstream.last["messages"][-1] == {"role": "user", "content": "hello"}
    again = http.get(f"/api/template-responses/{response['id']}").json()
    assert again["id"] == response["id"] and again["status"] == "succeeded"


def test_n8n_listings_and_credential_test(http: httpx.Client, world: World) -> None:
    assert http.get("/agents", params={"per_page": 1}, headers={"x-workspace-id": ""}).status_code == 200
    for kind in ("image", "video"):
        page = http.get("/agents", params={"type": kind, "per_page": 50}).json()
        assert page["data"] == [] and page["total"] == 0
    executed = http.post(
        f"/agents/{world.agent_id}/execute?waitExecution=true",
        json={"messages": [{"role": "user", "content": "find the needle"}], "language": "en"},
    ).json()["responses"][0]
    found = http.get("/agent-responses", params={"q": "needle", "sort": "desc", "per_page": 50}).json()["data"]
    assert [e["id"] for e in found] == [executed["id"]]
    by_output = http.get("/agent-responses", params={"q": "from the upstream"}).json()["data"]
    assert executed["id"] in [e["id"] for e in by_output]
    by_title = http.get("/agent-responses", params={"q": "Translator"}).json()["data"]
    assert executed["id"] in [e["id"] for e in by_title]
    assert http.get("/agent-responses", params={"q": "no such text anywhere"}).json()["data"] == []


def test_an_empty_body_is_an_empty_object(http: httpx.Client, world: World) -> None:
    resp = http.post(
        f"/agents/{world.text_agent_id}/execute", content=b"", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 422 and resp.json()["errors"] == {"topic": ["The topic field is required."]}


def test_hyphenated_names_are_checked_at_save(http: httpx.Client) -> None:
    wrong = http.post(
        "/agents",
        json={
            "title": "Bad",
            "instructions": "{{ call-to-action }}",
            "questions": [{"type": "text", "name": "call-to-action"}],
        },
    )
    assert wrong.status_code == 422
    assert 'inputs["call-to-action"]' in wrong.json()["errors"]["instructions"][0]
    unknown = http.post("/agents", json={"title": "Bad", "instructions": '{{ inputs["nope"] }}'})
    assert unknown.status_code == 422 and "nope" in unknown.json()["errors"]["instructions"][0]


def test_public_agents_are_shared_but_not_their_instructions_or_runs(
    http: httpx.Client, live: LiveServer, world: World, upstream: FakeUpstream
) -> None:
    """A public agent can be read and run by any user of the server; the run, its credits and
    its record belong to the caller's workspace; its instructions stay hidden."""
    public = _agent(
        http,
        title="Public helper",
        visibility="public",
        instructions="Secret recipe: be brief.",
        questions=[{"type": "select", "name": "model", "options": ["fake-gpt"]}],
    )
    private = _agent(http, title="Private helper", instructions="x")
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {world.other_token}"}) as bob:
        shown = bob.get(f"/agents/{public['id']}")
        assert shown.status_code == 200 and "instructions" not in shown.json()
        assert bob.get(f"/agents/{private['id']}").status_code == 404
        listed = bob.get("/agents", params={"visibility": "public"}).json()["data"]
        assert public["id"] in [a["id"] for a in listed] and private["id"] not in [a["id"] for a in listed]
        assert public["id"] not in [a["id"] for a in bob.get("/agents").json()["data"]]
        run = bob.post(
            f"/agents/{public['id']}/openai/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert run.status_code == 200, run.text
        execution_id = run.json()["agent_response"]["id"]
        assert bob.get(f"/agent-responses/{execution_id}").status_code == 200
        assert bob.patch(f"/agents/{public['id']}", json={"title": "mine"}).status_code == 404
    assert http.get(f"/agent-responses/{execution_id}").status_code == 404  # the owner does not see Bob's run
    assert upstream.last["messages"][0]["content"] == "Secret recipe: be brief."
