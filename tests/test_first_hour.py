"""A new user's first hour (issue: the first hour): bounded answers, conversations that never
lose a turn, a CLI that acts on the server's data from anywhere, a team's commands, and the
models list OpenAI clients ask for first."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from opentess.cli import cli
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.world import FAKE_MODEL, World

CHAT = {"language": "French", "messages": [{"role": "user", "content": "Hello"}]}


# bounded generation -----------------------------------------------------------------------------


def test_every_run_is_bounded_by_the_caller_the_agent_or_the_model(
    http: httpx.Client, world: World, upstream: FakeUpstream
) -> None:
    """/execute honours max_tokens as the OpenAI route does; an agent's own bound applies when
    the caller sends none."""
    http.post(f"/agents/{world.agent_id}/execute?waitExecution=true", json={**CHAT, "max_tokens": 7})
    assert upstream.last["max_tokens"] == 7
    http.post(f"/agents/{world.agent_id}/execute?waitExecution=true", json={**CHAT, "max_completion_tokens": "9"})
    assert upstream.last["max_tokens"] == 9
    bad = http.post(f"/agents/{world.agent_id}/execute", json={**CHAT, "max_tokens": -1})
    assert bad.status_code == 422 and "max_tokens" in bad.json()["errors"]
    agent = http.post(
        "/agents",
        json={
            "title": "Short",
            "max_tokens": 64,
            "questions": [{"type": "select", "name": "model", "options": [FAKE_MODEL]}],
        },
    ).json()
    assert agent["max_tokens"] == 64
    http.post(f"/agents/{agent['id']}/openai/chat/completions", json={"messages": CHAT["messages"]})
    assert upstream.last["max_tokens"] == 64
    http.post(f"/agents/{agent['id']}/openai/chat/completions", json={"messages": CHAT["messages"], "max_tokens": 5})
    assert upstream.last["max_tokens"] == 5


# conversations ----------------------------------------------------------------------------------


def test_a_running_conversation_cannot_be_continued(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    upstream.delay = 0.3
    upstream.chunks = ["a", "b", "c", "d", "e", "f"]
    first = http.post(f"/agents/{world.agent_id}/execute", json=CHAT).json()["responses"][0]
    follow = {"root_id": first["id"], "messages": [{"role": "user", "content": "And in German?"}]}
    native = http.post(f"/agents/{world.agent_id}/execute", json=follow)
    oa = http.post(f"/agents/{world.agent_id}/openai/chat/completions", json=follow)
    assert native.status_code == 409 and f"Execution {first['id']}" in native.json()["message"]
    assert oa.status_code == 409 and oa.json()["error"]["param"] == "root_id"
    http.post(f"/agent-responses/{first['id']}/cancel")


def test_a_continuation_keeps_the_conversations_fields_unless_it_sends_new_ones(
    http: httpx.Client, world: World, upstream: FakeUpstream
) -> None:
    first = http.post(f"/agents/{world.agent_id}/execute?waitExecution=true", json=CHAT).json()["responses"][0]
    follow = {"root_id": first["id"], "wait_execution": True, "messages": [{"role": "user", "content": "More?"}]}
    http.post(f"/agents/{world.agent_id}/execute", json=follow)
    system = upstream.last["messages"][0]["content"]
    assert "French" in system  # turn 1 said French; turn 2 sent no language
    assert [m["role"] for m in upstream.last["messages"]] == ["system", "user", "assistant", "user"]
    http.post(f"/agents/{world.agent_id}/execute", json={**follow, "language": "German"})
    assert "German" in upstream.last["messages"][0]["content"]


# the models list --------------------------------------------------------------------------------


def test_openai_clients_can_list_the_agents_models(live: LiveServer, world: World) -> None:
    from openai import NotFoundError, OpenAI

    client = OpenAI(base_url=f"{live.url}/agents/{world.agent_id}/openai", api_key=world.token)
    names = [m.id for m in client.models.list()]
    assert names == [FAKE_MODEL, "smollm2-135m", "dead-upstream"]
    assert client.models.retrieve(FAKE_MODEL).id == FAKE_MODEL
    with pytest.raises(NotFoundError):
        client.models.retrieve("gpt-4o")
    anonymous = httpx.get(f"{live.url}/agents/{world.agent_id}/openai/models")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"


# workspaces and members ---------------------------------------------------------------------------


def test_owners_manage_their_workspaces_members(http: httpx.Client, live: LiveServer, world: World) -> None:
    mine = http.get("/workspaces").json()["data"]
    assert {w["id"]: w["role"] for w in mine} == {world.workspace_id: "owner", world.second_workspace_id: "owner"}
    added = http.post(f"/workspaces/{world.second_workspace_id}/members", json={"email": "bob@example.com"})
    assert added.status_code == 201 and added.json()["role"] == "member"
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {world.other_token}"}) as bob:
        as_bob = {"x-workspace-id": str(world.second_workspace_id)}
        # the membership is seen within a second (cached reads), at once on this process
        assert bob.get("/agents", headers=as_bob).status_code == 200
        assert bob.get(f"/workspaces/{world.second_workspace_id}/members").status_code == 200
        refused = bob.post(
            f"/workspaces/{world.second_workspace_id}/members", json={"email": "bob@example.com", "role": "owner"}
        )
        assert refused.status_code == 403
        assert bob.get(f"/workspaces/{world.workspace_id}/members").status_code == 404
    assert http.delete(f"/workspaces/{world.second_workspace_id}/members/{world.user_id}").status_code == 403
    gone = http.get(f"/workspaces/{world.second_workspace_id}/members").json()["data"]
    bob_id = next(m["user_id"] for m in gone if m["email"] == "bob@example.com")
    assert http.delete(f"/workspaces/{world.second_workspace_id}/members/{bob_id}").status_code == 204
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {world.other_token}"}) as bob:
        assert bob.get("/agents", headers={"x-workspace-id": str(world.second_workspace_id)}).status_code == 403
    assert http.post(f"/workspaces/{world.workspace_id}/members", json={"email": "nobody@x.io"}).status_code == 404


# the CLI ----------------------------------------------------------------------------------------------

AGENT = """\
title: Support bot
instructions: "Help with {{ product }}."
questions:
  - {type: select, name: model, options: [smollm2-135m]}
  - {type: text, name: product, required: true}
"""


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "opentess.toml"
    config.write_text(f'data_dir = "{tmp_path / "server-data"}"\n')
    return {"OPENTESS_DATA_DIR": "", "OPENTESS_CONFIG": "", "HOME": str(tmp_path), "CFG": str(config)}


def _run(env: dict[str, str], *args: str) -> Any:
    clean = {k: v for k, v in env.items() if k != "CFG"}
    return CliRunner().invoke(cli, list(args), env=clean, catch_exceptions=False)


def test_the_cli_finds_the_servers_data_from_anywhere(
    cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--config anywhere on the line; a new database is announced with its path; a command that
    finds no user names the database it looked in."""
    for k in ("OPENTESS_DATA_DIR", "OPENTESS_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    cfg = cli_env["CFG"]
    created = _run(cli_env, "users", "create", "ana@example.com", "--config", cfg)
    assert created.exit_code == 0, created.stderr
    assert "created a new, empty database at" in created.stderr and "server-data" in created.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    listed = _run(cli_env, "--config", cfg, "users", "list")
    assert listed.stdout.splitlines()[0].split() == ["ID", "EMAIL", "NAME", "WORKSPACE"]
    assert "ana@example.com" in listed.stdout
    missing = _run(cli_env, "tokens", "create", "--user", "nobody@example.com", "--config", cfg)
    assert missing.exit_code != 0 and "in the database at" in missing.stderr and "server-data" in missing.stderr
    assert _run(cli_env, "-V").stdout.startswith("opentess, version")


def test_agents_apply_is_idempotent(cli_env: dict[str, str], tmp_path: Path) -> None:
    cfg = cli_env["CFG"]
    _run(cli_env, "--config", cfg, "users", "create", "ana@example.com")
    path = tmp_path / "agent.yaml"
    path.write_text(AGENT)
    first = json.loads(
        _run(cli_env, "--config", cfg, "agents", "apply", "--file", str(path), "--workspace", "1", "--json").stdout
    )
    again = json.loads(
        _run(cli_env, "--config", cfg, "agents", "apply", "--file", str(path), "--workspace", "1", "--json").stdout
    )
    assert (first["action"], again["action"]) == ("created", "unchanged") and first["id"] == again["id"]
    path.write_text(AGENT.replace("Help with", "Support"))
    changed = json.loads(
        _run(cli_env, "--config", cfg, "agents", "apply", "--file", str(path), "--workspace", "1", "--json").stdout
    )
    assert changed["action"] == "updated" and changed["id"] == first["id"]
    twice = _run(cli_env, "--config", cfg, "agents", "create", "--file", str(path), "--workspace", "1")
    assert twice.exit_code == 0 and "support-bot" in _run(cli_env, "--config", cfg, "agents", "list").stdout
    listing = _run(cli_env, "--config", cfg, "agents", "list").stdout
    assert "support-bot-2" in listing  # a second agent from the same title gets its own slug
    path.write_text(AGENT + "slug: support-bot\n")
    taken = _run(cli_env, "--config", cfg, "agents", "create", "--file", str(path), "--workspace", "1")
    assert taken.exit_code != 0 and "slug" in taken.stderr
    members = _run(cli_env, "--config", cfg, "workspaces", "members", "list", "1")
    assert members.stdout.splitlines()[0].split() == ["USER", "EMAIL", "ROLE", "JOINED"]
    assert os.environ.get("OPENTESS_CONFIG", "") == ""
