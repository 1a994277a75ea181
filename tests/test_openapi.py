"""The API documents itself truthfully: every route with its body, its answers and their error
shapes, the bearer scheme, and pages that work offline. The answers of a live server validate
against the schemas they are documented with."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from opentess.api import schemas
from tests.support.live import LiveServer
from tests.support.world import World

CHAT = {"language": "en", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def document(live: LiveServer) -> dict[str, Any]:
    return dict(httpx.get(f"{live.url}/openapi.json").json())


def test_every_operation_says_what_it_takes_and_answers(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for prefix in ("", "/api"):
        for path, method in (
            ("/agents", "post"),
            ("/agents/{agent_id}", "patch"),
            ("/agents/{agent_id}/execute", "post"),
            ("/agents/{agent_id}/openai/chat/completions", "post"),
            ("/tokens", "post"),
        ):
            assert "requestBody" in paths[prefix + path][method], (prefix + path, method)
    listing = paths["/agents"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"q", "type", "page", "per_page"}
    for item in paths.values():
        for operation in item.values():
            for status, answer in operation["responses"].items():
                assert answer.get("content") or status == "204", (operation.get("operationId"), status)
    validation = paths["/agents"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]
    assert validation == {"$ref": "#/components/schemas/ValidationFailed"}
    chat_error = paths["/agents/{agent_id}/openai/chat/completions"]["post"]["responses"]["400"]
    assert chat_error["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OpenAIError"}
    assert "422" not in paths["/healthz"]["get"]["responses"]
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_the_bearer_scheme_guards_every_operation_but_health(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token, `ot_…`",
    }
    for path, item in document["paths"].items():
        for operation in item.values():
            guarded = operation.get("security") == [{"bearer": []}]
            assert guarded == (path not in ("/healthz", "/readyz", "/metrics")), path
    assert "FastRoute" not in str(document)


def test_docs_pages_work_offline(live: LiveServer) -> None:
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{live.url}{page}").text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: ?'([^']+)'", html)
        assert urls, page
        assert not [u for u in urls if u.startswith(("http:", "https:", "//"))], (page, urls)
        for url in urls:
            assert httpx.get(f"{live.url}{url}").status_code == 200, url


def _valid(model: type[BaseModel], body: Any) -> None:
    model.model_validate(body)


def test_live_answers_match_their_schemas(live: LiveServer, world: World, http: httpx.Client) -> None:
    _valid(schemas.AgentPage, http.get("/agents").json())
    _valid(schemas.Agent, http.get(f"/agents/{world.agent_id}").json())
    created = http.post("/agents", json={"title": "Doc", "instructions": "Hi"})
    _valid(schemas.ManagedAgent, created.json())
    _valid(schemas.ManagedAgent, http.patch(f"/agents/{created.json()['id']}", json={"title": "Doc 2"}).json())
    executed = http.post(f"/agents/{world.agent_id}/execute?waitExecution=true", json=CHAT).json()
    _valid(schemas.ExecuteResponse, executed)
    started = http.post(f"/agents/{world.agent_id}/execute", json=CHAT).json()
    _valid(schemas.ExecuteResponse, started)
    execution_id = executed["responses"][0]["id"]
    _valid(schemas.Execution, http.get(f"/agent-responses/{execution_id}").json())
    _valid(schemas.ExecutionPage, http.get("/agent-responses").json())
    _valid(schemas.ChatCompletion, http.post(f"/agents/{world.agent_id}/openai/chat/completions", json=CHAT).json())
    made = http.post("/tokens", json={"name": "doc"}).json()
    _valid(schemas.TokenWithSecret, made)
    _valid(schemas.TokenList, http.get("/tokens").json())
    _valid(schemas.Token, http.patch(f"/tokens/{made['id']}", json={"name": "doc2"}).json())
    _valid(schemas.Token, http.delete(f"/tokens/{made['id']}").json())
    _valid(schemas.ValidationFailed, http.post("/agents", json={"title": ""}).json())
    _valid(schemas.NativeError, http.get("/agents/999999").json())
    _valid(schemas.OpenAIError, http.post(f"/agents/{world.agent_id}/openai/chat/completions", json={}).json())
    _valid(schemas.Health, http.get("/healthz").json())
    _valid(schemas.Readiness, http.get("/readyz").json())
