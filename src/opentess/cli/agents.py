"""`opentess agents`: agents from YAML files (the format of the README's "Agents" section)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from opentess.agents import AgentSpec, parse_spec, slugify, validate_spec
from opentess.api import wire
from opentess.cli.common import domain_errors, emit, json_option, run_with_store, settings_from, table
from opentess.sandbox import TemplateSandbox
from opentess.settings import Settings
from opentess.store import Store

file_option = click.option(
    "--file", "path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Agent YAML."
)


def _read(path: Path) -> AgentSpec:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{path} is not valid YAML: {exc}") from exc
    return parse_spec(raw)


async def _validate(spec: AgentSpec, settings: Settings) -> None:
    async with TemplateSandbox(settings.sandbox_limits()) as sandbox:
        await validate_spec(spec, settings, sandbox)


@click.group()
def agents() -> None:
    """Manage agents."""


@agents.command("create")
@file_option
@click.option("--workspace", "workspace_id", required=True, type=int, help="Workspace id.")
@json_option
@click.pass_context
@domain_errors
def agents_create(ctx: click.Context, path: Path, workspace_id: int, as_json: bool) -> None:
    """Create an agent from a YAML file (a slug already taken in the workspace is refused)."""
    spec = _read(path)

    async def go(store: Store, settings: Settings) -> dict[str, Any]:
        await _validate(spec, settings)
        await store.users.workspace(workspace_id)
        return wire.managed_agent(await store.agents.create(spec, workspace_id))

    emit(run_with_store(go, settings_from(ctx)), as_json, lambda d: f"created agent {d['id']} {d['title']!r}")


@agents.command("apply")
@file_option
@click.option("--workspace", "workspace_id", required=True, type=int, help="Workspace id.")
@json_option
@click.pass_context
@domain_errors
def agents_apply(ctx: click.Context, path: Path, workspace_id: int, as_json: bool) -> None:
    """Create the agent of a YAML file, or update the workspace's agent with its slug (the
    file's `slug`, else the one derived from its title). Applying a file twice changes nothing."""
    spec = _read(path)
    slug = spec.slug or slugify(spec.title)
    spec = spec.model_copy(update={"slug": slug})

    async def go(store: Store, settings: Settings) -> dict[str, Any]:
        await _validate(spec, settings)
        await store.users.workspace(workspace_id)
        existing = await store.agents.by_slug(slug, workspace_id)
        if existing is None:
            return {"action": "created", **wire.managed_agent(await store.agents.create(spec, workspace_id))}
        if existing.spec() == spec:
            return {"action": "unchanged", **wire.managed_agent(existing)}
        updated = await store.agents.update(existing.id, workspace_id, spec)
        return {"action": "updated", **wire.managed_agent(updated)}

    emit(
        run_with_store(go, settings_from(ctx)),
        as_json,
        lambda d: f"{d['action']} agent {d['id']} {d['title']!r} (slug {d['slug']})",
    )


@agents.command("update")
@click.argument("agent_id", type=int)
@file_option
@json_option
@click.pass_context
@domain_errors
def agents_update(ctx: click.Context, agent_id: int, path: Path, as_json: bool) -> None:
    """Replace an agent's definition with a YAML file's (its id and executions stay)."""
    spec = _read(path)

    async def go(store: Store, settings: Settings) -> dict[str, Any]:
        await _validate(spec, settings)
        current = await store.agents.get(agent_id)
        kept = spec if spec.slug is not None else spec.model_copy(update={"slug": current.slug})
        return wire.managed_agent(await store.agents.update(agent_id, current.workspace_id, kept))

    emit(run_with_store(go, settings_from(ctx)), as_json, lambda d: f"updated agent {d['id']} {d['title']!r}")


@agents.command("list")
@click.option("--workspace", "workspace_id", type=int, help="Only this workspace's agents.")
@json_option
@click.pass_context
@domain_errors
def agents_list(ctx: click.Context, workspace_id: int | None, as_json: bool) -> None:
    """List agents."""

    async def go(store: Store, _: Settings) -> list[dict[str, Any]]:
        return [wire.managed_agent(a) for a in await store.agents.list_all(workspace_id)]

    columns = [("id", "ID"), ("type", "TYPE"), ("workspace_id", "WORKSPACE"), ("slug", "SLUG"), ("title", "TITLE")]
    emit(run_with_store(go, settings_from(ctx)), as_json, lambda rows: table(rows, columns, "no agents"))


@agents.command("show")
@click.argument("agent_id", type=int)
@click.pass_context
@domain_errors
def agents_show(ctx: click.Context, agent_id: int) -> None:
    """Show one agent as JSON, instructions and questions included."""

    async def go(store: Store, _: Settings) -> dict[str, Any]:
        return wire.managed_agent(await store.agents.get(agent_id))

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
