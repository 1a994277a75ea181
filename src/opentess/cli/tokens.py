"""`opentess tokens`: API tokens, made and limited by the operator."""

from __future__ import annotations

from typing import Any

import click

from opentess.api import wire
from opentess.authority import MAX_EXPIRY_DAYS, MAX_LIMIT
from opentess.cli.common import domain_errors, emit, json_option, run_with_store, settings_from, table
from opentess.settings import Settings
from opentess.store import Store


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
        return {**wire.token(record), "token": secret}

    data = run_with_store(go, settings_from(ctx))
    emit(data, as_json, lambda d: f"created token {d['id']} for {d['user']} (shown once):\n{d['token']}")


def _state(row: dict[str, Any]) -> str:
    if row["revoked_at"]:
        return "revoked"
    return f"expires {row['expires_at']}" if row["expires_at"] else "active"


@tokens.command("list")
@json_option
@click.pass_context
@domain_errors
def tokens_list(ctx: click.Context, as_json: bool) -> None:
    """List tokens (never their secrets)."""

    async def go(store: Store, _: Settings) -> list[dict[str, Any]]:
        return [wire.token(t) for t in await store.tokens.list_all()]

    columns = [("id", "ID"), ("prefix", "PREFIX"), ("user", "USER"), ("name", "NAME"), ("state", "STATE"),
               ("rpm_limit", "RPM"), ("concurrency_limit", "CONCURRENCY")]  # fmt: skip
    emit(
        run_with_store(go, settings_from(ctx)),
        as_json,
        lambda rows: table(
            [{**r, "prefix": r["prefix"] + "…", "state": _state(r)} for r in rows], columns, "no tokens"
        ),
    )


@tokens.command("limits")
@click.argument("token_id", type=int)
@click.option("--rpm", help="Requests per minute, or 'default' for the server's.")
@click.option("--concurrency", help="Executions at once, or 'default' for the server's.")
@json_option
@click.pass_context
@domain_errors
def tokens_limits(ctx: click.Context, token_id: int, rpm: str | None, concurrency: str | None, as_json: bool) -> None:
    """Set a token's rate limits (the operator may widen them; a token never can)."""
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
        return wire.token(await store.tokens.update(token_id, **changes))

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
    """Revoke a token, and every token made from it; requests with them are refused from then on."""

    async def go(store: Store, _: Settings) -> dict[str, Any]:
        return wire.token(await store.tokens.revoke(token_id))

    emit(run_with_store(go, settings_from(ctx)), as_json, lambda d: f"revoked token {d['id']}")
