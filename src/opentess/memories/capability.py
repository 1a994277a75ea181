"""The memories capability (see opentess.capabilities)."""

from __future__ import annotations

from typing import Any

from opentess.capabilities import Capability


def capability(state: Any) -> Capability:
    return Capability("memories")
