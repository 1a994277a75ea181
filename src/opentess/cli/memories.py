"""`opentess memories`: a user's memories (the operator's view of what ``/memories`` serves)."""

from __future__ import annotations

import sys
from typing import Any

import click

from opentess.cli.common import domain_errors, emit, json_option, run_with_store, settings_from, table
from opentess.errors import InvalidInput
from opentess.memories import wire
from opentess.memories.store import MemoryStore, memory_text
from opentess.settings import Settings
from opentess.store import Store

user_option = click.option("--user", "email", required=True, help="The user's email.")
collection_option = click.option(
    "--collection", "collection_id", type=int, help="One of the user's collections (default: their default one)."
)


@click.group()
def memories() -> None:
    """Manage memories."""


@memories.command("add")
@click.argument("text")
@user_option
@collection_option
@json_option
@click.pass_context
@domain_errors
def memories_add(ctx: click.Context, text: str, email: str, collection_id: int | None, as_json: bool) -> None:
    """Remember TEXT for a user (`-` reads it from stdin); at most 32,000 characters."""
    if text == "-":
        text = sys.stdin.read()
    errors: dict[str, list[str]] = {}
    text = memory_text(text, errors)
    if errors:
        raise InvalidInput(errors)

    async def go(store: Store, _: Settings) -> dict[str, Any]:
        user = await store.users.by_email(email)
        return wire.memory(await MemoryStore(store.engine).add(user.id, text, collection_id))

    emit(
        run_with_store(go, settings_from(ctx)),
        as_json,
        lambda d: f"added memory {d['id']} to collection {d['collection_id']}",
    )


@memories.command("list")
@user_option
@collection_option
@json_option
@click.pass_context
@domain_errors
def memories_list(ctx: click.Context, email: str, collection_id: int | None, as_json: bool) -> None:
    """A user's memories, newest first."""

    async def go(store: Store, _: Settings) -> list[dict[str, Any]]:
        user = await store.users.by_email(email)
        found, _total = await MemoryStore(store.engine).memories(
            user.id, collection_id=collection_id, offset=0, limit=1_000_000
        )
        return [wire.memory(m) for m in found]

    def text(rows: list[dict[str, Any]]) -> str:
        short = [{**r, "memory": _one_line(r["memory"])} for r in rows]
        return table(short, [("id", "ID"), ("collection_id", "COLLECTION"), ("memory", "MEMORY")], "no memories")

    emit(run_with_store(go, settings_from(ctx)), as_json, text)


@memories.command("delete")
@click.argument("memory_id", type=int)
@json_option
@click.pass_context
@domain_errors
def memories_delete(ctx: click.Context, memory_id: int, as_json: bool) -> None:
    """Delete a memory."""

    async def go(store: Store, _: Settings) -> dict[str, Any]:
        memories = MemoryStore(store.engine)
        found = await memories.find(memory_id)
        return wire.memory(await memories.delete(found.user_id, memory_id))

    emit(run_with_store(go, settings_from(ctx)), as_json, lambda d: f"deleted memory {d['id']}")


def _one_line(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
