"""Memories and memory collections: Tess's shapes as the n8n node reads them, per user (not per
workspace), bad input on every route, and ``memory_collections`` putting memories into what the
model receives — all of them when they fit, the most relevant when they do not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from opentess.api import memory_schemas as ms
from opentess.api import schemas
from opentess.cli import cli
from tests.support.fake_upstream import FakeUpstream
from tests.support.isolated import isolated_world
from tests.support.live import LiveServer
from tests.support.world import World

CHAT = {"language": "en", "messages": [{"role": "user", "content": "What should I know?"}]}


class N8n:
    """The n8n node's requests (notes/clients.md §2.1–2.3, 2.8): no /api prefix, the workspace
    header as typed, JSON bodies, ``cleanQuery`` dropping empty values, paging by
    ``meta.last_page``."""

    def __init__(self, base: str, token: str, workspace: int) -> None:
        headers = {"Authorization": f"Bearer {token}", "x-workspace-id": str(workspace), "Accept": "application/json"}
        self.client = httpx.Client(base_url=base, headers=headers, timeout=60)

    def request(self, method: str, endpoint: str, body: Any = None, qs: dict[str, Any] | None = None) -> Any:
        query = {k: v for k, v in (qs or {}).items() if v not in (None, "", 0)}
        resp = self.client.request(method, endpoint, json=body, params=query)
        assert resp.status_code < 300, (method, endpoint, resp.status_code, resp.text)
        return resp.json()

    def all_items(self, endpoint: str, data_key: str, qs: dict[str, Any] | None = None) -> list[Any]:
        items: list[Any] = []
        page, per_page = 1, 50
        while True:
            response = self.request("GET", endpoint, qs={**(qs or {}), "page": page, "per_page": per_page})
            batch = response.get(data_key) or []
            items += batch
            meta = response.get("meta") or response
            if not batch or (page >= meta["last_page"] if "last_page" in meta else len(batch) < per_page):
                return items
            page += 1


@pytest.fixture
def bob(live: LiveServer, world: World) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {world.other_token}"}) as client:
        yield client


def _collection(http: httpx.Client, name: str) -> int:
    resp = http.post("/memory-collections", json={"name": name})
    assert resp.status_code == 201, resp.text
    return int(resp.json()["collection"]["id"])


def _system(upstream: FakeUpstream) -> str:
    messages = upstream.last["messages"]
    return str(messages[0]["content"]) if messages[0]["role"] == "system" else ""


def test_the_n8n_memory_operations(live: LiveServer, world: World, upstream: FakeUpstream) -> None:
    """The n8n node's memory and collection operations, replayed, and its execute call with
    ``memory_collections``: the collection's memories reach the model."""
    n8n = N8n(live.url, world.token, world.workspace_id)
    created = n8n.request("POST", "/memory-collections", {"name": "Customer facts (n8n)"})
    collection = created["collection"]
    assert collection["display_name"] == "Customer facts (n8n)" and collection["user_id"] == world.user_id
    listed = n8n.all_items("/memory-collections", "collections")
    labels = {c["id"]: c["display_name"] or c["name"] or c["id"] for c in listed}
    assert labels[collection["id"]] == "Customer facts (n8n)" and "My Memories" in labels.values()
    assert listed[0]["display_name"] == "My Memories" and listed[0]["name"] == "default"

    facts = [f"Customer {n} prefers invoices in {'EUR' if n % 2 else 'BRL'}" for n in range(52)]
    ids = [
        n8n.request("POST", "/memories", {"memory": f, "collection_id": collection["id"]})["memory"]["id"]
        for f in facts
    ]
    got = n8n.all_items("/memories", "memories", {"collection_id": collection["id"]})
    assert sorted(m["id"] for m in got) == sorted(ids)  # two pages of 50, by meta.last_page
    assert {m["memory"] for m in got} == set(facts) and {m["credits"] for m in got} == {0.0}

    body = {**CHAT, "memory_collections": [collection["id"]], "waitExecution": True}
    execution = n8n.request("POST", f"/agents/{world.agent_id}/execute", body)["responses"][0]
    assert execution["status"] == "succeeded"
    system = _system(upstream)
    assert all(f in system for f in facts)
    shown = n8n.request("GET", f"/agent-responses/{execution['id']}")
    assert shown["memories"] == {
        "collections": [collection["id"]],
        "used": sorted(ids),  # they all fit: oldest first
        "available": 52,
        "selection": "all",
    }

    default_id = listed[0]["id"]
    updated = n8n.request(
        "PATCH", f"/memories/{ids[0]}", {"memory": "Customer 0 moved to USD", "collection_id": default_id}
    )
    assert updated["message"] == "Memory updated successfully!"
    assert updated["memory"]["memory"] == "Customer 0 moved to USD"
    assert updated["memory"]["collection"] == {"id": default_id, "user_id": world.user_id, "name": "default"}
    assert n8n.request("DELETE", f"/memories/{ids[1]}") == {"message": "Memory deleted successfully!"}
    renamed = n8n.request("PUT", f"/memory-collections/{collection['id']}", {"name": "Clients"})
    assert renamed["message"] == "Collection updated successfully" and renamed["collection"]["name"] == "Clients"
    assert n8n.request("DELETE", f"/memory-collections/{collection['id']}") == {
        "message": "Collection deleted successfully"
    }
    assert n8n.client.get("/memories", params={"collection_id": collection["id"]}).status_code == 404
    assert n8n.request("GET", f"/memories/{ids[0]}")["memory"]["collection"]["id"] == default_id  # moved: kept
    assert n8n.client.get(f"/memories/{ids[2]}").status_code == 404  # deleted with its collection
    refused = n8n.client.delete(f"/memory-collections/{default_id}")
    assert refused.status_code == 403 and refused.json()["message"] == "Default collection cannot be deleted"


def test_memory_collections_reach_the_model_on_the_openai_route(
    http: httpx.Client, world: World, upstream: FakeUpstream
) -> None:
    """A root-level ``memory_collections`` on the OpenAI-compatible route; without it, no
    memories and ``memories: null`` on the execution."""
    collection = _collection(http, "OpenAI route")
    http.post("/memories", json={"memory": "The user's dog is called Biscuit.", "collection_id": collection})
    body = {"model": "gpt-4o", "memory_collections": [str(collection)], **CHAT}
    resp = http.post(f"/agents/{world.agent_id}/openai/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert "Biscuit" in _system(upstream) and _system(upstream).startswith("You are a translator")
    execution = http.get(f"/agent-responses/{resp.json()['agent_response']['id']}").json()
    assert execution["memories"]["collections"] == [collection] and len(execution["memories"]["used"]) == 1

    resp = http.post(f"/agents/{world.agent_id}/openai/chat/completions", json={"model": "x", **CHAT})
    assert "Biscuit" not in _system(upstream)
    assert http.get(f"/agent-responses/{resp.json()['agent_response']['id']}").json()["memories"] is None


def test_memories_are_the_users_not_the_workspaces(
    live: LiveServer, world: World, http: httpx.Client, bob: httpx.Client, upstream: FakeUpstream
) -> None:
    """Alice sees her memories from any of her workspaces; Bob sees none of them, cannot change
    them, cannot file into her collections or run with them — each answered as a missing one."""
    mine = _collection(http, "Private")
    memory = http.post("/memories", json={"memory": "Alice's PIN hint: blue", "collection_id": mine}).json()["memory"]
    second = {"x-workspace-id": str(world.second_workspace_id)}
    assert http.get(f"/memories/{memory['id']}", headers=second).status_code == 200
    listed = http.get("/memories", params={"collection_id": mine}, headers=second).json()["memories"]
    assert [m["id"] for m in listed] == [memory["id"]]
    body = {**CHAT, "memory_collections": [mine]}
    resp = http.post(f"/agents/{world.second_ws_agent_id}/execute?waitExecution=true", json=body, headers=second)
    assert resp.status_code == 200 and "PIN hint" in _system(upstream)

    assert bob.get(f"/memories/{memory['id']}").status_code == 404
    assert bob.patch(f"/memories/{memory['id']}", json={"memory": "x"}).status_code == 404
    assert bob.delete(f"/memories/{memory['id']}").status_code == 404
    assert bob.get("/memories", params={"collection_id": mine}).status_code == 404
    assert bob.get(f"/memory-collections/{mine}").status_code == 404
    assert bob.put(f"/memory-collections/{mine}", json={"name": "mine now"}).status_code == 404
    assert bob.delete(f"/memory-collections/{mine}").status_code == 404
    filed = bob.post("/memories", json={"memory": "sneaky", "collection_id": mine})
    assert filed.status_code == 422 and "collection_id" in filed.json()["errors"]
    assert all(m["user_id"] != world.user_id for m in bob.get("/memories?per_page=50").json()["memories"])
    assert [c["name"] for c in bob.get("/memory-collections").json()["collections"]] == ["default"]
    upstream.reset()
    ran = bob.post(f"/agents/{world.other_agent_id}/execute?waitExecution=true", json=body)
    assert ran.status_code == 422 and "memory_collections" in ran.json()["errors"]
    ran = bob.post(f"/agents/{world.other_agent_id}/openai/chat/completions", json=body)
    assert ran.status_code == 400 and ran.json()["error"]["param"] == "memory_collections"
    assert upstream.requests == []  # refused before any model was called
    assert http.get(f"/memories/{memory['id']}").json()["memory"]["memory"] == "Alice's PIN hint: blue"


def test_bad_input_on_every_memory_route(http: httpx.Client) -> None:
    collection = _collection(http, "Bad input")
    memory = http.post("/memories", json={"memory": "ok", "collection_id": collection}).json()["memory"]["id"]
    huge = "x" * 32_001
    cases: list[tuple[str, str, Any, int, str]] = [
        ("GET", "/memories?page=abc", None, 422, "page"),
        ("GET", "/memories?per_page=0", None, 422, "per_page"),
        ("GET", "/memories?collection_id=abc", None, 422, "collection_id"),
        ("GET", "/memories?collection_id=999999", None, 404, ""),
        ("POST", "/memories", {}, 422, "memory"),
        ("POST", "/memories", {"memory": 12}, 422, "memory"),
        ("POST", "/memories", {"memory": "   "}, 422, "memory"),
        ("POST", "/memories", {"memory": huge}, 422, "memory"),
        ("POST", "/memories", {"memory": "x", "collection_id": "abc"}, 422, "collection_id"),
        ("POST", "/memories", {"memory": "x", "collection_id": 999999}, 422, "collection_id"),
        ("POST", "/memories", [1], 400, ""),
        ("GET", "/memories/999999", None, 404, ""),
        ("GET", "/memories/abc", None, 404, ""),
        ("PATCH", "/memories/999999", {"memory": "x"}, 404, ""),
        ("PATCH", f"/memories/{memory}", {}, 422, "memory"),
        ("PATCH", f"/memories/{memory}", {"memory": huge}, 422, "memory"),
        ("PATCH", f"/memories/{memory}", {"memory": "x", "collection_id": 999999}, 422, "collection_id"),
        ("DELETE", "/memories/999999", None, 404, ""),
        ("GET", "/memory-collections?page=-1", None, 422, "page"),
        ("POST", "/memory-collections", {}, 422, "name"),
        ("POST", "/memory-collections", {"name": 5}, 422, "name"),
        ("POST", "/memory-collections", {"name": "n" * 101}, 422, "name"),
        ("POST", "/memory-collections", {"name": "Bad input"}, 422, "name"),  # taken
        ("POST", "/memory-collections", {"name": "default"}, 422, "name"),  # the default's
        ("GET", "/memory-collections/999999", None, 404, ""),
        ("PUT", "/memory-collections/999999", {"name": "x"}, 404, ""),
        ("PUT", f"/memory-collections/{collection}", {"name": ""}, 422, "name"),
        ("DELETE", "/memory-collections/999999", None, 404, ""),
    ]
    for method, path, body, status, field in cases:
        resp = http.request(method, path, json=body) if body is not None else http.request(method, path)
        assert resp.status_code == status, (method, path, body, resp.text)
        answer = resp.json()
        assert answer["message"] and answer["error"], (method, path)
        if field:
            assert field in answer["errors"], (method, path, answer)
    assert http.post("/memories", content=b"{nope", headers={"Content-Type": "application/json"}).status_code == 400
    clamped = http.get("/memories?per_page=500").json()
    assert len(clamped["memories"]) <= 50 and clamped["meta"]["current_page"] == 1
    schemas_ok = http.post("/memories", json={"memory": "x" * 32_000, "collection_id": collection})
    assert schemas_ok.status_code == 201  # exactly the limit


def test_answers_match_their_schemas(http: httpx.Client) -> None:
    collection = http.post("/memory-collections", json={"name": "Schemas"}).json()
    ms.CollectionCreated.model_validate(collection)
    cid = collection["collection"]["id"]
    created = http.post("/memories", json={"memory": "schema", "collection_id": cid}).json()
    ms.MemoryCreated.model_validate(created)
    mid = created["memory"]["id"]
    ms.MemoryFound.model_validate(http.get(f"/memories/{mid}").json())
    ms.MemoryList.model_validate(http.get("/memories").json())
    ms.MemoryUpdated.model_validate(http.patch(f"/memories/{mid}", json={"memory": "again"}).json())
    ms.CollectionList.model_validate(http.get("/memory-collections?search=schem").json())
    ms.CollectionUpdated.model_validate(http.put(f"/memory-collections/{cid}", json={"name": "Schemas 2"}).json())
    ms.Message.model_validate(http.delete(f"/memories/{mid}").json())
    ms.Message.model_validate(http.delete(f"/memory-collections/{cid}").json())
    schemas.ValidationFailed.model_validate(http.post("/memories", json={}).json())
    found = http.get("/memory-collections", params={"search": "Schemas"}).json()
    assert found["collections"] == [] and found["meta"] == {"current_page": 1, "last_page": 1, "total": 0}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_most_relevant_memories_when_they_do_not_all_fit(
    backend: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Over the budget (``memories_max_chars``), the memories matching the latest user message
    (full-text) come first, then the newest, as many as fit; which ones is recorded."""
    with isolated_world(backend, tmp_path / "data", upstream.url, memories_max_chars=400) as world:
        server = LiveServer(world.settings).start()
        try:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {world.token}"}) as http:
                collection = _collection(http, "Many")
                filler = [f"Gerald the office plant needs water on day {n} of the month." for n in range(20)]
                ids = [
                    http.post("/memories", json={"memory": f, "collection_id": collection}).json()["memory"]["id"]
                    for f in filler[:10]
                ]
                teal = http.post(
                    "/memories", json={"memory": "My favourite colour is teal.", "collection_id": collection}
                )
                teal_id = teal.json()["memory"]["id"]
                ids += [
                    http.post("/memories", json={"memory": f, "collection_id": collection}).json()["memory"]["id"]
                    for f in filler[10:]
                ]
                body = {
                    "language": "en",
                    "memory_collections": [collection],
                    "messages": [{"role": "user", "content": "What is my favourite colour?"}],
                }
                resp = http.post(f"/agents/{world.agent_id}/execute?waitExecution=true", json=body)
                assert resp.status_code == 200, resp.text
                used = http.get(f"/agent-responses/{resp.json()['responses'][0]['id']}").json()["memories"]
                assert used["selection"] == "relevance" and used["available"] == 21
                assert used["used"][0] == teal_id  # the match first
                assert used["used"][1:] == sorted(ids, reverse=True)[: len(used["used"]) - 1]  # then the newest
                assert 1 < len(used["used"]) < 21
                system = _system(upstream)
                assert "My favourite colour is teal." in system
                section = system[system.index("## Memories") :]
                assert len(section) <= 400
        finally:
            server.stop()


def test_memories_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"OPENTESS_DATA_DIR": str(tmp_path / "data"), "OPENTESS_CONFIG": ""}

    def run(*args: str, ok: bool = True) -> Any:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert (result.exit_code == 0) == ok, (args, result.stdout, result.stderr)
        return result

    run("users", "create", "dana@example.com")
    added = json.loads(run("memories", "add", "Prefers short answers", "--user", "dana@example.com", "--json").stdout)
    assert added["memory"] == "Prefers short answers" and added["collection_id"]
    second = run("memories", "add", "Lives in\nLisbon", "--user", "dana@example.com")
    assert second.stdout.startswith("added memory ")
    listed = json.loads(run("memories", "list", "--user", "dana@example.com", "--json").stdout)
    assert [m["memory"] for m in listed] == ["Lives in\nLisbon", "Prefers short answers"]
    text = run("memories", "list", "--user", "dana@example.com").stdout
    assert "Lives in Lisbon" in text and text.splitlines()[0].split() == ["ID", "COLLECTION", "MEMORY"]
    assert run("memories", "delete", str(added["id"])).stdout.strip() == f"deleted memory {added['id']}"
    assert len(json.loads(run("memories", "list", "--user", "dana@example.com", "--json").stdout)) == 1
    failed = run("memories", "add", "x", "--user", "dana@example.com", "--collection", "999", ok=False)
    assert "collection_id" in failed.stderr and failed.stdout == ""
    assert "32000" in run("memories", "add", "y" * 32_001, "--user", "dana@example.com", ok=False).stderr
    assert "no user" in run("memories", "list", "--user", "nobody@example.com", ok=False).stderr
    assert "not found" in run("memories", "delete", "999", ok=False).stderr.lower()
