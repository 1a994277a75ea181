"""What every CLI command shares: the configuration (``--config`` anywhere on the command line,
or ``OPENTESS_CONFIG``), a migrated store on the same database as the server, errors that say
which database they come from, and output as aligned columns or ``--json``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click
from pydantic import ValidationError

from opentess.db.engine import make_engine, migrate, pending_migrations
from opentess.errors import InvalidInput, NotFound, OpentessError
from opentess.settings import Settings, load_settings
from opentess.store import Store, close_store

P = ParamSpec("P")
T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        root = ctx.find_root()
        root.obj = {**(root.obj or {}), "config": value}


def config_option(command: click.Command) -> click.Command:
    """Accept ``--config FILE`` on this command too (not only before the subcommand)."""
    command.params.append(
        click.Option(
            ["--config"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            is_eager=True,
            callback=_remember_config,
            help="TOML configuration file (env: OPENTESS_CONFIG).",
        )
    )
    return command


def settings_from(ctx: click.Context, **overrides: Any) -> Settings:
    root = ctx.find_root()
    config = (root.obj or {}).get("config")
    try:
        return load_settings(config, **overrides)
    except (ValidationError, ValueError) as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc


def where(settings: Settings) -> str:
    """The database a command uses, as a person would recognise it."""
    if settings.is_embedded_sqlite:
        return str((settings.data_dir / "opentess.db").resolve())
    url = settings.resolved_database_url
    return url.split("@")[-1] if "@" in url else url


async def open_store(settings: Settings) -> Store:
    """A store on a database whose schema is current. The embedded SQLite database is created
    and migrated on the fly (and the command says so); any other database must be migrated
    explicitly with `opentess migrate`."""
    new = settings.is_embedded_sqlite and not (settings.data_dir / "opentess.db").exists()
    engine = make_engine(settings)
    try:
        if await pending_migrations(engine):
            if not settings.is_embedded_sqlite:
                raise click.ClickException(
                    f"the database at {where(settings)} has unapplied migrations; run `opentess migrate` first"
                )
            await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    if new:
        click.echo(
            f"opentess: created a new, empty database at {where(settings)} "
            "(set OPENTESS_DATA_DIR or --config to use another one)",
            err=True,
        )
    return Store(engine)


def run_with_store(fn: Callable[[Store, Settings], Awaitable[T]], settings: Settings) -> T:
    async def go() -> T:
        store = await open_store(settings)
        try:
            return await fn(store, settings)
        except NotFound as exc:
            raise click.ClickException(f"{exc.message} (in the database at {where(settings)})") from exc
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


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], empty: str) -> str:
    """Rows as aligned columns under a header: ``columns`` are (key, heading) pairs."""
    if not rows:
        return empty
    cells = [[heading for _, heading in columns]]
    cells += [["" if row.get(key) is None else str(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in cells)
