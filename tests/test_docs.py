"""Docs that cannot drift: every setting, route and CLI command is documented."""

from __future__ import annotations

import re
from pathlib import Path

import click

from opentess.api.app import create_app
from opentess.cli import cli
from opentess.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()


def test_every_setting_is_in_the_configuration_doc() -> None:
    missing = [f"OPENTESS_{name.upper()}" for name in Settings.model_fields]
    missing = [var for var in missing if f"`{var}`" not in CONFIGURATION]
    assert missing == []


def test_every_route_is_in_the_readme() -> None:
    # path parameters are written {id} in the docs, as in the Tess docs
    paths = {re.sub(r"\{\w+\}", "{id}", p) for p in create_app(Settings()).openapi()["paths"]}
    paths = {p for p in paths if not p.startswith("/api/")}
    assert paths
    assert sorted(p for p in paths if f"`{p}`" not in README and f" {p}`" not in README) == []


def test_every_cli_command_is_in_the_readme() -> None:
    commands: list[str] = []
    for name, command in cli.commands.items():
        if isinstance(command, click.Group):
            commands += [f"opentess {name} {sub}" for sub in command.commands]
        else:
            commands.append(f"opentess {name}")
    assert [c for c in commands if c not in README] == []


def test_readme_first_screen_has_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:25])
    assert "scripts/serve" in first_screen and "scripts/test" in first_screen
