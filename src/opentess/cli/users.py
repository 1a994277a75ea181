"""`opentess users` and `opentess workspaces`: people and the workspaces they share."""

from __future__ import annotations

from typing import Any

import click

from opentess.cli.common import domain_errors, emit, json_option, run_with_store, settings_from, table
from opentess.clock import laravel
from opentess.settings import Settings
from opentess.store import Store
from opentess.store.users import ROLES, MemberRecord, UserRecord, WorkspaceRecord


def user_row(user: UserRecord) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "default_workspace_id": user.default_workspace_id,
        "created_at": laravel(user.created_at),
    }


def workspace_row(ws: WorkspaceRecord) -> dict[str, Any]:
    return {"id": ws.id, "name": ws.name, "owner_id": ws.owner_id, "created_at": laravel(ws.created_at)}


def member_row(member: MemberRecord) -> dict[str, Any]:
    return {
        "user_id": member.user_id,
        "email": member.email,
        "name": member.name,
        "role": member.role,
        "joined_at": laravel(member.joined_at),
    }


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
        user, _ws = await store.users.create(email, name)
        return user_row(user)

    data = run_with_store(go, settings_from(ctx))
    emit(data, as_json, lambda d: f"created user {d['id']} {d['email']} with workspace {d['default_workspace_id']}")


@users.command("list")
@json_option
@click.pass_context
@domain_errors
def users_list(ctx: click.Context, as_json: bool) -> None:
    """List users."""

    async def go(store: Store, _: Settings) -> list[dict[str, Any]]:
        return [user_row(u) for u in await store.users.list_users()]

    columns = [("id", "ID"), ("email", "EMAIL"), ("name", "NAME"), ("default_workspace_id", "WORKSPACE")]
    emit(run_with_store(go, settings_from(ctx)), as_json, lambda rows: table(rows, columns, "no users"))


@click.group()
def workspaces() -> None:
    """Manage workspaces and their members."""


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
        return workspace_row(await store.users.create_workspace(name, owner.id))

    emit(run_with_store(go, settings_from(ctx)), as_json, lambda d: f"created workspace {d['id']} {d['name']!r}")


@workspaces.command("list")
@json_option
@click.pass_context
@domain_errors
def workspaces_list(ctx: click.Context, as_json: bool) -> None:
    """List workspaces."""

    async def go(store: Store, _: Settings) -> list[dict[str, Any]]:
        return [workspace_row(ws) for ws in await store.users.list_workspaces()]

    columns = [("id", "ID"), ("name", "NAME"), ("owner_id", "OWNER")]
    emit(run_with_store(go, settings_from(ctx)), as_json, lambda rows: table(rows, columns, "no workspaces"))


@workspaces.group("members")
def members() -> None:
    """The members of a workspace: they can use its agents and see its executions."""


@members.command("list")
@click.argument("workspace_id", type=int)
@json_option
@click.pass_context
@domain_errors
def members_list(ctx: click.Context, workspace_id: int, as_json: bool) -> None:
    """List a workspace's members."""

    async def go(store: Store, _: Settings) -> list[dict[str, Any]]:
        await store.users.workspace(workspace_id)
        return [member_row(m) for m in await store.users.members(workspace_id)]

    columns = [("user_id", "USER"), ("email", "EMAIL"), ("role", "ROLE"), ("joined_at", "JOINED")]
    emit(run_with_store(go, settings_from(ctx)), as_json, lambda rows: table(rows, columns, "no members"))


@members.command("add")
@click.argument("workspace_id", type=int)
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), default="member", show_default=True)
@json_option
@click.pass_context
@domain_errors
def members_add(ctx: click.Context, workspace_id: int, email: str, role: str, as_json: bool) -> None:
    """Add a user to a workspace (or change their role there)."""

    async def go(store: Store, _: Settings) -> dict[str, Any]:
        user = await store.users.by_email(email)
        return member_row(await store.users.add_member(workspace_id, user.id, role))

    emit(
        run_with_store(go, settings_from(ctx)),
        as_json,
        lambda d: f"{d['email']} is a {d['role']} of workspace {workspace_id}",
    )


@members.command("remove")
@click.argument("workspace_id", type=int)
@click.argument("email")
@click.pass_context
@domain_errors
def members_remove(ctx: click.Context, workspace_id: int, email: str) -> None:
    """Remove a user from a workspace (not its owner)."""

    async def go(store: Store, _: Settings) -> None:
        user = await store.users.by_email(email)
        await store.users.remove_member(workspace_id, user.id)

    run_with_store(go, settings_from(ctx))
    click.echo(f"removed {email} from workspace {workspace_id}")
