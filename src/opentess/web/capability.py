"""The web console (see opentess.capabilities)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from opentess.capabilities import Capability


def install(app: FastAPI) -> None:
    """Add the console's routes and static files to the app."""


def capability(state: Any) -> Capability:
    return Capability("web")
