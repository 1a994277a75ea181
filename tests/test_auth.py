"""Contract §1: tokens, workspaces and tenancy on the OpenAI-compatible route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.live import LiveServer
from tests.support.world import World

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "language": "English"}


def call(live: LiveServer, agent_id: int, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{live.url}/agents/{agent_id}/openai/chat/completions", json=BODY, headers=headers, timeout=30)


def error(resp: httpx.Response) -> dict[str, Any]:
    return dict(resp.json()["error"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer ot_not-a-real-token"},
    ],
    ids=["missing", "empty", "not-bearer", "unknown"],
)
def test_bad_tokens_are_401(live: LiveServer, world: World, headers: dict[str, str]) -> None:
    resp = call(live, world.agent_id, headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert error(resp)["type"] == "authentication_error"


def test_revoked_token_is_401(live: LiveServer, world: World) -> None:
    resp = call(live, world.agent_id, {"Authorization": f"Bearer {world.revoked_token}"})
    assert resp.status_code == 401 and "revoked" in error(resp)["message"]


def test_expired_token_is_401(live: LiveServer, world: World) -> None:
    resp = call(live, world.agent_id, {"Authorization": f"Bearer {world.expired_token}"})
    assert resp.status_code == 401 and "expired" in error(resp)["message"]


def test_workspace_header_not_an_integer_is_422(live: LiveServer, world: World) -> None:
    resp = call(live, world.agent_id, {"Authorization": f"Bearer {world.token}", "x-workspace-id": "abc"})
    assert resp.status_code == 422
    assert error(resp)["param"] == "x-workspace-id"


def test_foreign_workspace_is_403(live: LiveServer, world: World) -> None:
    headers = {"Authorization": f"Bearer {world.token}", "x-workspace-id": str(world.other_workspace_id)}
    resp = call(live, world.agent_id, headers)
    assert resp.status_code == 403
    assert error(resp)["type"] == "permission_error"


def test_selecting_a_workspace_scopes_the_agents(live: LiveServer, world: World) -> None:
    """The default workspace does not see the second workspace's agent, and vice versa."""
    auth = {"Authorization": f"Bearer {world.token}"}
    assert call(live, world.second_ws_agent_id, auth).status_code == 404
    second = {**auth, "x-workspace-id": str(world.second_workspace_id)}
    assert call(live, world.second_ws_agent_id, second).status_code == 200
    assert call(live, world.agent_id, second).status_code == 404


def test_agent_of_another_workspace_looks_missing(live: LiveServer, world: World) -> None:
    """Same status and body for another tenant's agent and for an agent that does not exist."""
    auth = {"Authorization": f"Bearer {world.token}"}
    foreign = call(live, world.other_agent_id, auth)
    missing = call(live, 999_999, auth)
    not_a_number = httpx.post(f"{live.url}/agents/abc/openai/chat/completions", json=BODY, headers=auth, timeout=30)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    assert not_a_number.status_code == 404


def test_other_user_cannot_use_alices_agent(live: LiveServer, world: World) -> None:
    resp = call(live, world.agent_id, {"Authorization": f"Bearer {world.other_token}"})
    assert resp.status_code == 404
    assert call(live, world.other_agent_id, {"Authorization": f"Bearer {world.other_token}"}).status_code == 200


def test_revocation_takes_effect_within_a_second(live: LiveServer, world: World) -> None:
    """Tokens are cached for at most one second: a token revoked elsewhere (here: straight in the
    database, as another process would) is refused within a second; one revoked through this
    server's API is refused at once."""
    import asyncio
    import time

    from opentess.db.engine import make_engine
    from opentess.store import Store, close_store

    auth = {"Authorization": f"Bearer {world.token}"}
    created = httpx.post(f"{live.url}/tokens", json={"name": "short-lived"}, headers=auth).json()
    mine = {"Authorization": f"Bearer {created['token']}"}
    assert call(live, world.agent_id, mine).status_code == 200  # now cached

    async def revoke_elsewhere() -> None:
        store = Store(make_engine(world.settings))
        try:
            await store.tokens.revoke(created["id"])
        finally:
            await close_store(store)

    asyncio.run(revoke_elsewhere())
    time.sleep(1.1)
    assert call(live, world.agent_id, mine).status_code == 401

    second = httpx.post(f"{live.url}/tokens", json={"name": "api-revoked"}, headers=auth).json()
    theirs = {"Authorization": f"Bearer {second['token']}"}
    assert call(live, world.agent_id, theirs).status_code == 200
    assert httpx.delete(f"{live.url}/tokens/{second['id']}", headers=auth).status_code == 200
    assert call(live, world.agent_id, theirs).status_code == 401
