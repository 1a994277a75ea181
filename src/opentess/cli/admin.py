"""Operator commands: users, workspaces, tokens, agents. Every create/list command has --json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from opentess.agents import parse_spec, validate_spec
from opentess.api import wire
from opentess.authority import MAX_EXPIRY_DAYS, MAX_LIMIT
from opentess.cli.common import domain_errors, emit, run_with_store, settings_from
from opentess.clock import laravel
from opentess.sandbox import TemplateSandbox
from opentess.settings import Settings
from opentess.store import AgentRecord, Store, TokenRecord, WorkspaceRecord

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _workspace(ws: WorkspaceRecord) -> dict[str, Any]:
    return {"id": ws.id, "name": ws.name, "owner_id": ws.owner_id, "created_at": laravel(ws.created_at)}


def _token(t: TokenRecord) -> dict[str, Any]:
    return wire.token(t)


def _agent(a: AgentRecord) -> dict[str, Any]:
    return wire.managed_agent(a)


# users ----------------------------------------------------------------------------------------


@click.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@json_option
@click.pass_context
@domain_errors
def users_create(ctx: click.Context, email: str, name: str, as_json: bool) -> None:
    """Create a user and their personal default workspace."""

    async def go(store: Store, _: Settings) -> dict[str, Any]:
        user, ws = await store.users.create(email, name)
        return {"id": user.id, "email": user.email, "name": user.name, "default_workspace_id": ws.id}

    data = run_with_store(go, settings_from(ctx))
    emit(
        data,
        as_json,
        lambda d: f"created user {d['id']} {d['email']} with workspace {d['default_workspace_id']}",
    )


# workspaces -----------------------------------------------------------------------------------


@click.group()
def workspaces() -> None:
    """Manage workspaces."""


@workspaces.command("create")
@click.argument("name")
@click.option("--owner", "owner_email", required=True, help="Email of the owning user.")
@json_option
@click.pass_context
@domain_errors
def workspaces_create(ctx: click.Context, name: str, owner_email: str, as_json: bool) -> None:
    """Create a workspace owned (and joined) by a user."""

    async def go(store: Store, _: Settings) -> dict[str, Any]:
        owner = await store.users.by_email(owner_email)
        return _workspace(await store.users.create_workspace(name, owner.id))

    data = run_with_store(go, settings_from(ctx))
    emit(data, as_json, lambda d: f"created workspace {d['id']} {d['name']!r}")


@workspaces.command("list")
@json_option
@click.pass_context
@domain_errors
def workspaces_list(ctx: click.Context, as_json: bool) -> None:
    """List workspaces."""

    async def go(store: Store, _: Settings) -> list[dict[str, Any]]:
        return [_workspace(ws) for ws in await store.users.list_workspaces()]

    data = run_with_store(go, settings_from(ctx))
    emit(data, as_json, lambda rows: "\n".join(f"{r['id']}\t{r['name']}\towner {r['owner_id']}" for r in rows))


# tokens ---------------------------------------------------------------------------------------


@click.group()
def tokens() -> None:
    """Manage API tokens."""


@tokens.command("create")
@click.option("--user", "email", required=True, help="Email of the token's user.")
@click.option("--name", default="", help="A label for the token.")
@click.option(
    "--expires-in",
    "days",
    type=click.FloatRange(min=0, min_open=True, max=MAX_EXPIRY_DAYS),
    help="Expire after DAYS days.",
)
@click.option("--rpm", type=click.IntRange(min=1, max=MAX_LIMIT), help="Requests per minute (default: the server's).")
@click.option(
    "--concurrency", type=click.IntRange(min=1, max=MAX_LIMIT), help="Executions at once (default: the server's)."
)
@json_option
@click.pass_context
@domain_errors
def tokens_create(
    ctx: click.Context,
    email: str,
    name: str,
    days: float | None,
    rpm: int | None,
    concurrency: int | None,
    as_json: bool,
) -> None:
    """Create an API token; the secret is printed once and never stored."""

    async def go(store: Store, _: Settings) -> dict[str, Any]:
        user = await store.users.by_email(email)
        record, secret = await store.tokens.create(user.id, name, days, rpm, concurrency)
        return {**_token(record), "token": secret}

    data = run_with_store(go, settings_from(ctx))
    emit(data, as_json, lambda d: f"created token {d['id']} for {d['user']} (shown once):\n{d['token']}")


@tokens.command("list")
@json_option
@click.pass_context
@domain_errors
def tokens_list(ctx: click.Context, as_json: bool) -> None:
    """List tokens (never their secrets)."""

    async def go(store: Store, _: Settings) -> list[dict[str, Any]]:
        return [_token(t) for t in await store.tokens.list_all()]

    def text(rows: list[dict[str, Any]]) -> str:
        return "\n".join(
            f"{r['id']}\t{r['prefix']}…\t{r['user']}\t{r['name']}\t"
            + ("revoked" if r["revoked_at"] else f"expires {r['expires_at']}" if r["expires_at"] else "active")
            for r in rows
        )

    emit(run_with_store(go, settings_from(ctx)), as_json, text)


@tokens.command("limits")
@click.argument("token_id", type=int)
@click.option("--rpm", help="Requests per minute, or 'default' for the server's.")
@click.option("--concurrency", help="Executions at once, or 'default' for the server's.")
@json_option
@click.pass_context
@domain_errors
def tokens_limits(ctx: click.Context, token_id: int, rpm: str | None, concurrency: str | None, as_json: bool) -> None:
    """Set a token's rate limits."""
    changes: dict[str, object] = {}
    for key, raw in (("rpm_limit", rpm), ("concurrency_limit", concurrency)):
        if raw is None:
            continue
        if raw == "default":
            changes[key] = None
        elif raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT:
            changes[key] = int(raw)
        else:
            raise click.BadParameter(f"{raw!r} is not a positive integer or 'default'")

    async def go(store: Store, _: Settings) -> dict[str, Any]:
        return _token(await store.tokens.update(token_id, **changes))

    emit(
        run_with_store(go, settings_from(ctx)),
        as_json,
        lambda d: (
            f"token {d['id']}: rpm {d['rpm_limit'] or 'default'}, concurrency {d['concurrency_limit'] or 'default'}"
        ),
    )


@tokens.command("revoke")
@click.argument("token_id", type=int)
@json_option
@click.pass_context
@domain_errors
def tokens_revoke(ctx: click.Context, token_id: int, as_json: bool) -> None:
    """Revoke a token; requests with it are refused from then on."""

    async def go(store: Store, _: Settings) -> dict[str, Any]:
        return _token(await store.tokens.revoke(token_id))

    emit(run_with_store(go, settings_from(ctx)), as_json, lambda d: f"revoked token {d['id']}")


# agents ---------------------------------------------------------------------------------------


@click.group()
def agents() -> None:
    """Manage agents."""


@agents.command("create")
@click.option("--file", "path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workspace", "workspace_id", required=True, type=int, help="Workspace id.")
@json_option
@click.pass_context
@domain_errors
def agents_create(ctx: click.Context, path: Path, workspace_id: int, as_json: bool) -> None:
    """Create an agent from a YAML file (format: README, "Agents")."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{path} is not valid YAML: {exc}") from exc
    spec = parse_spec(raw)

    async def go(store: Store, settings: Settings) -> dict[str, Any]:
        async with TemplateSandbox(settings.sandbox_limits()) as sandbox:
            await validate_spec(spec, settings.models, sandbox, settings.max_instructions_chars)
        await store.users.workspace(workspace_id)
        return _agent(await store.agents.create(spec, workspace_id))

    emit(run_with_store(go, settings_from(ctx)), as_json, lambda d: f"created agent {d['id']} {d['title']!r}")


@agents.command("list")
@click.option("--workspace", "workspace_id", type=int, help="Only this workspace's agents.")
@json_option
@click.pass_context
@domain_errors
def agents_list(ctx: click.Context, workspace_id: int | None, as_json: bool) -> None:
    """List agents."""

    async def go(store: Store, _: Settings) -> list[dict[str, Any]]:
        return [_agent(a) for a in await store.agents.list_all(workspace_id)]

    def text(rows: list[dict[str, Any]]) -> str:
        return "\n".join(f"{r['id']}\t{r['type']}\tworkspace {r['workspace_id']}\t{r['title']}" for r in rows)

    emit(run_with_store(go, settings_from(ctx)), as_json, text)


@agents.command("show")
@click.argument("agent_id", type=int)
@click.pass_context
@domain_errors
def agents_show(ctx: click.Context, agent_id: int) -> None:
    """Show one agent as JSON, instructions and questions included."""

    async def go(store: Store, _: Settings) -> dict[str, Any]:
        return _agent(await store.agents.get(agent_id))

    emit(run_with_store(go, settings_from(ctx)), True, str)


@agents.command("delete")
@click.argument("agent_id", type=int)
@click.pass_context
@domain_errors
def agents_delete(ctx: click.Context, agent_id: int) -> None:
    """Delete an agent (its executions stay readable)."""

    async def go(store: Store, _: Settings) -> None:
        await store.agents.delete(agent_id)

    run_with_store(go, settings_from(ctx))
    click.echo(f"deleted agent {agent_id}")


GROUPS = [users, workspaces, tokens, agents]
