"""`opentess files`: upload, list and delete files."""

from __future__ import annotations

import click


@click.group()
def files() -> None:
    """Manage files (agents' knowledge)."""
