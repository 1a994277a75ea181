"""The CLI: users, workspaces, tokens and agents, with --json parsed as scripts would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from opentess.cli import cli
from opentess.db.engine import head_revision

HEAD = head_revision()

AGENT_YAML = """\
title: Support bot
type: chat
description: Answers product questions
visibility: workspace
instructions: |
  You are the support assistant of {{ product }}. Answer in {{ language }}.
questions:
  - {type: select, name: temperature, options: [0, 0.5, 1], default: 0.5}
  - {type: select, name: model, options: [smollm2-135m]}
  - {type: select, name: tools, options: [no-tools]}
  - {type: text, name: product, required: true, description: Product name}
  - {type: select, name: language, options: [English, French], default: English}
"""


def test_users_workspaces_tokens_agents(run: Any, tmp_path: Path) -> None:
    user = json.loads(run("users", "create", "carol@example.com", "--name", "Carol", "--json").stdout)
    assert user["email"] == "carol@example.com" and user["default_workspace_id"]

    ws = json.loads(run("workspaces", "create", "Research", "--owner", "carol@example.com", "--json").stdout)
    listed = json.loads(run("workspaces", "list", "--json").stdout)
    assert {w["id"] for w in listed} == {user["default_workspace_id"], ws["id"]}

    token = json.loads(run("tokens", "create", "--user", "carol@example.com", "--name", "ci", "--json").stdout)
    assert token["token"].startswith("ot_") and token["name"] == "ci"
    tokens = json.loads(run("tokens", "list", "--json").stdout)
    assert [t["id"] for t in tokens] == [token["id"]]
    assert "token" not in tokens[0] and token["token"] not in run("tokens", "list").stdout
    revoked = json.loads(run("tokens", "revoke", str(token["id"]), "--json").stdout)
    assert revoked["revoked_at"] is not None

    expiring = json.loads(run("tokens", "create", "--user", "carol@example.com", "--expires-in", "7", "--json").stdout)
    assert expiring["expires_at"] is not None

    agent_file = tmp_path / "agent.yaml"
    agent_file.write_text(AGENT_YAML)
    agent = json.loads(
        run("agents", "create", "--file", str(agent_file), "--workspace", str(ws["id"]), "--json").stdout
    )
    assert agent["title"] == "Support bot" and agent["slug"] == "support-bot"
    assert [q["name"] for q in agent["questions"]] == ["temperature", "model", "tools", "product", "language"]
    assert agent["questions"][0]["options"] == ["0", "0.5", "1"]
    shown = json.loads(run("agents", "show", str(agent["id"])).stdout)
    assert shown["instructions"].startswith("You are the support assistant of {{ product }}")
    assert [a["id"] for a in json.loads(run("agents", "list", "--workspace", str(ws["id"]), "--json").stdout)] == [
        agent["id"]
    ]
    assert json.loads(run("agents", "list", "--workspace", str(user["default_workspace_id"]), "--json").stdout) == []
    assert "deleted agent" in run("agents", "delete", str(agent["id"])).stdout
    assert json.loads(run("agents", "list", "--json").stdout) == []


def test_errors_go_to_stderr_with_a_nonzero_exit(run: Any, tmp_path: Path) -> None:
    run("users", "create", "dave@example.com")
    duplicate = run("users", "create", "dave@example.com", ok=False)
    assert duplicate.exit_code != 0
    assert "already exists" in duplicate.stderr and duplicate.stdout == ""

    missing = run("tokens", "create", "--user", "nobody@example.com", ok=False)
    assert missing.exit_code != 0 and "no user" in missing.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("title: Broken\ninstructions: 'Hello {{ name }}'\nquestions:\n  - {type: select, name: x}\n")
    result = run("agents", "create", "--file", str(bad), "--workspace", "1", ok=False)
    assert result.exit_code != 0
    assert "name" in result.stderr and "needs options" in result.stderr

    unknown_model = tmp_path / "model.yaml"
    unknown_model.write_text("title: M\nquestions:\n  - {type: select, name: model, options: [gpt-9]}\n")
    result = run("agents", "create", "--file", str(unknown_model), "--workspace", "1", ok=False)
    assert "unknown model" in result.stderr and "gpt-9" in result.stderr

    not_yaml = tmp_path / "not.yaml"
    not_yaml.write_text("title: [unclosed\n")
    assert "not valid YAML" in run("agents", "create", "--file", str(not_yaml), "--workspace", "1", ok=False).stderr

    good = tmp_path / "good.yaml"
    good.write_text(AGENT_YAML)
    assert "no workspace" in run("agents", "create", "--file", str(good), "--workspace", "999", ok=False).stderr
    assert run("agents", "show", "999", ok=False).exit_code != 0
    assert run("tokens", "revoke", "999", ok=False).exit_code != 0


def test_migrate_is_idempotent(run: Any) -> None:
    first = run("migrate").stdout
    assert f"to {HEAD}" in first
    assert f"already at {HEAD}" in run("migrate").stdout


def test_bad_config_file_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "opentess.toml"
    config.write_text('[models.broken]\nprovider = "openai"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "workspaces", "list"])
    assert result.exit_code != 0
    assert "base_url" in result.stderr
