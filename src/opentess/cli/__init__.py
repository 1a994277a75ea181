"""The ``opentess`` command: a thin layer over the same services the server uses."""

from __future__ import annotations

import click

from opentess import __version__
from opentess.cli import admin, serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="opentess")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="OPENTESS_CONFIG",
    help="TOML configuration file (env: OPENTESS_CONFIG).",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Self-hosted server for AI chat agents behind the Tess agent API."""
    ctx.obj = {"config": config}


cli.add_command(serve.serve)
cli.add_command(serve.migrate)
for group in admin.GROUPS:
    cli.add_command(group)


def main() -> None:
    cli(prog_name="opentess")
