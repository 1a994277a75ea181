"""Console sign-in from the command line (`opentess users set-password`)."""

from __future__ import annotations

import click

# commands added to the `users` group
USER_COMMANDS: list[click.Command] = []
