"""`opentess memories`: a user's memories."""

from __future__ import annotations

import click


@click.group()
def memories() -> None:
    """Manage memories."""
