"""`opentess serve` and `opentess migrate`."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from opentess.bootstrap import banner, first_start
from opentess.cli.common import settings_from
from opentess.coordination import multi_process_problems
from opentess.db.engine import make_engine, pending_migrations
from opentess.db.engine import migrate as apply_migrations
from opentess.logs import setup_logging
from opentess.settings import Settings
from opentess.store import Store
from opentess.web.setup import banner_lines as console_banner


async def _prepare(settings: Settings) -> str:
    """Migrate (embedded SQLite only), seed a first start, end runs of processes that are gone."""
    engine = make_engine(settings)
    try:
        if await pending_migrations(engine):
            if not settings.is_embedded_sqlite:
                raise click.ClickException(
                    "the database has unapplied migrations; run `opentess migrate` before `opentess serve`"
                )
            await apply_migrations(engine)
        store = Store(engine)
        seed = await first_start(store, settings)
        interrupted = await store.instances.reap(settings.instance_stale_s)
        console = await console_banner(engine, settings)  # the console's URL, and its first password
    finally:
        await engine.dispose()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    lines = []
    if seed is not None:
        lines.append(banner(seed, f"http://{host}:{settings.port}"))
    else:
        lines.append(
            "opentess: using existing data; create a token with "
            "`opentess tokens create --user EMAIL` and list agents with `opentess agents list`."
        )
    lines.extend(console)
    if interrupted:
        lines.append(f"opentess: {interrupted} execution(s) interrupted by the previous stop were marked failed.")
    return "\n".join(lines)


@click.command()
@click.option("--host", help="Interface to listen on (env: OPENTESS_HOST, default 127.0.0.1).")
@click.option("--port", type=int, help="Port (env: OPENTESS_PORT, default 8000).")
@click.option("--workers", type=click.IntRange(min=1), help="Server processes (env: OPENTESS_WORKERS, default 1).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Start the API server (migrating and seeding the embedded database on first start)."""
    from opentess import server

    # first: the allocator's settings hold only for threads that start after them, and the
    # database preparation below starts the driver's threads
    server.tune_malloc()
    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    settings = settings_from(ctx, **overrides)
    setup_logging(settings)
    if os.environ.get(server.CHILD_FD_ENV):  # a worker of `serve --workers N`: the parent prepared
        server.child_main(settings)
        return
    if settings.workers > 1:
        problems = multi_process_problems(settings)
        if problems:
            raise click.ClickException(
                f"refusing to start {settings.workers} processes: {'; '.join(problems)}. "
                "Set OPENTESS_REDIS_URL (redis_url) so that the processes share them, or run one process."
            )
    click.echo(asyncio.run(_prepare(settings)))
    if settings.workers == 1:
        server.run_single(settings)
        return
    # children rebuild the same settings from the same command line and environment
    sys.exit(server.supervise(settings, sys.argv[1:]))


@click.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply every pending database migration."""
    settings = settings_from(ctx)

    async def go() -> tuple[str | None, str | None]:
        engine = make_engine(settings)
        try:
            return await apply_migrations(engine)
        finally:
            await engine.dispose()

    before, after = asyncio.run(go())
    if before == after:
        click.echo(f"database already at {after}")
    else:
        click.echo(f"migrated database from {before or 'empty'} to {after}")
