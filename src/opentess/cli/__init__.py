"""The ``opentess`` command: a thin layer over the same services the server uses, one module per
command group. ``--config`` is accepted anywhere on the command line."""

from __future__ import annotations

import click

from opentess import __version__
from opentess.cli import agents, console, files, memories, serve, tokens, users
from opentess.cli.common import config_option


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="opentess")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="OPENTESS_CONFIG",
    help="TOML configuration file (env: OPENTESS_CONFIG).",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Self-hosted server for AI chat agents behind the Tess agent API."""
    ctx.obj = {"config": config, **(ctx.obj or {})}


def _add(group: click.Group, command: click.Command) -> None:
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add(command, sub)
    else:
        config_option(command)
    if group is not command:
        group.add_command(command)


for _command in console.USER_COMMANDS:
    users.users.add_command(_command)
for _command in (
    serve.serve,
    serve.migrate,
    users.users,
    users.workspaces,
    tokens.tokens,
    agents.agents,
    files.files,
    memories.memories,
):
    _add(cli, _command)


def main() -> None:
    cli(prog_name="opentess")
