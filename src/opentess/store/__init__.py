"""Repositories over the async engine: Core statements, one round trip each, plain records out."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.store.agents import AgentRecord, AgentStore
from opentess.store.executions import ExecutionRecord, ExecutionStore
from opentess.store.instances import InstanceStore
from opentess.store.tokens import TokenRecord, TokenStore
from opentess.store.users import UserRecord, UserStore, WorkspaceRecord


class Store:
    """Every repository, sharing one engine."""

    def __init__(self, engine: AsyncEngine, pool_size: int = 10, lock_wait_s: float = 30.0) -> None:
        self.engine = engine
        self.users = UserStore(engine)
        self.tokens = TokenStore(engine)
        self.agents = AgentStore(engine)
        self.executions = ExecutionStore(engine, pool_size, lock_wait_s)
        self.instances = InstanceStore(engine, self.executions.writer)  # its writes on the same writer


async def close_store(store: Store) -> None:
    """Close the executions' writer (after the writes it has accepted), then the engine."""
    await store.executions.aclose()
    await store.engine.dispose()


__all__ = [
    "AgentRecord",
    "ExecutionRecord",
    "Store",
    "TokenRecord",
    "UserRecord",
    "WorkspaceRecord",
]
