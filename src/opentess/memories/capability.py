"""The memories capability (see opentess.capabilities): its store (``extras["store"]``, used by
the routes) and its context source, which puts a call's ``memory_collections`` into the context."""

from __future__ import annotations

from typing import Any

from opentess.capabilities import Capability
from opentess.memories.context import MemoriesSource
from opentess.memories.store import MemoryStore


def capability(state: Any) -> Capability:
    store = MemoryStore(state.engine)
    source = MemoriesSource(state.engine, store, state.settings.memories_max_chars, state.settings.max_input_chars)
    return Capability("memories", context_sources=[source], extras={"store": store})
