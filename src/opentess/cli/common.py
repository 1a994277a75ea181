"""Helpers shared by the CLI commands: settings, a migrated store, output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click
from pydantic import ValidationError

from opentess.db.engine import make_engine, migrate, pending_migrations
from opentess.errors import InvalidInput, OpentessError
from opentess.settings import Settings, load_settings
from opentess.store import Store, close_store

P = ParamSpec("P")
T = TypeVar("T")


def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    try:
        return load_settings(ctx.obj.get("config") if ctx.obj else None, **overrides)
    except (ValidationError, ValueError) as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc


async def open_store(settings: Settings) -> Store:
    """A store on a database whose schema is current. The embedded SQLite database is migrated
    on the fly; any other database must be migrated explicitly with `opentess migrate`."""
    engine = make_engine(settings)
    try:
        if await pending_migrations(engine):
            if not settings.is_embedded_sqlite:
                raise click.ClickException("the database has unapplied migrations; run `opentess migrate` first")
            await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    return Store(engine)


def run_with_store(fn: Callable[[Store, Settings], Awaitable[T]], settings: Settings) -> T:
    async def go() -> T:
        store = await open_store(settings)
        try:
            return await fn(store, settings)
        finally:
            await close_store(store)

    return asyncio.run(go())


def domain_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Domain errors become a one-line message on stderr and exit code 1."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except InvalidInput as exc:
            details = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.errors.items())
            raise click.ClickException(details) from exc
        except OpentessError as exc:
            raise click.ClickException(exc.message) from exc

    return wrapper


def emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text(data))
