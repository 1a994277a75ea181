"""Server instances and the reaper: a run belongs to the process that started it; when that
process is gone (its heartbeat is stale, or — on this host — its pid no longer exists), the run
is ended ``failed`` so that nothing stays ``running`` forever, whatever the number of processes.

Its writes go through the executions' writer (``ExecutionWriter.execute``): on SQLite that is the
one thread that writes everything of ours, so the reaper's bulk updates never fight the group
commit for the database lock. Reads stay on the engine."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from datetime import timedelta

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.clock import utcnow
from opentess.db.models import Execution, ServerInstance
from opentess.store.executions import ACTIVE
from opentess.store.writers import ExecutionWriter

INTERRUPTED = "interrupted by server restart"
LOST = "ended by the server's recovery pass: no run was driving it"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class InstanceStore:
    def __init__(self, engine: AsyncEngine, writer: ExecutionWriter) -> None:
        self._engine = engine
        self._writer = writer
        self.hostname = socket.gethostname()[:255]

    async def register(self, instance_id: str) -> None:
        now = utcnow()
        await self._writer.execute(
            insert(ServerInstance).values(
                id=instance_id, hostname=self.hostname, pid=os.getpid(), started_at=now, heartbeat_at=now
            )
        )

    async def heartbeat(self, instance_id: str) -> None:
        (updated,) = await self._writer.execute(
            update(ServerInstance).where(ServerInstance.id == instance_id).values(heartbeat_at=utcnow())
        )
        if updated == 0:  # reaped while paused (a long GC, a suspended VM): come back
            await self.register(instance_id)

    async def unregister(self, instance_id: str) -> None:
        await self._writer.execute(delete(ServerInstance).where(ServerInstance.id == instance_id))

    async def fail_lost(self, instance_id: str, driven: Collection[int], older_than_s: float) -> int:
        """Fail the active executions of this live process that no run drives (``driven``: the
        ids of its runs, and of ends waiting to be stored) and that began more than
        ``older_than_s`` ago: whatever left them, nothing will end them otherwise."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        conditions = [
            Execution.instance_id == instance_id,
            Execution.status.in_(ACTIVE),
            Execution.created_at < cutoff,
        ]
        if driven:
            conditions.append(Execution.id.not_in(list(driven)))
        (failed,) = await self._writer.execute(
            update(Execution).where(*conditions).values(status="failed", error=LOST, updated_at=utcnow())
        )
        return failed

    async def reap(self, stale_after_s: float) -> int:
        """Forget dead instances and fail their active runs; returns how many runs were failed."""
        cutoff = utcnow() - timedelta(seconds=stale_after_s)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(ServerInstance.id, ServerInstance.hostname, ServerInstance.pid))).all()
        # on this host a dead process is known at once; elsewhere, by its silence
        dead = [r.id for r in rows if r.hostname == self.hostname and not _pid_alive(r.pid)]
        live = select(ServerInstance.id)
        _, failed = await self._writer.execute(  # one transaction: forget the dead, fail what they ran
            delete(ServerInstance).where(or_(ServerInstance.id.in_(dead), ServerInstance.heartbeat_at < cutoff)),
            update(Execution)
            .where(
                Execution.status.in_(ACTIVE),
                or_(Execution.instance_id.is_(None), Execution.instance_id.not_in(live)),
            )
            .values(status="failed", error=INTERRUPTED, updated_at=utcnow()),
        )
        return failed
