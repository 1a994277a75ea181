"""Users, workspaces and memberships."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentess.clock import utcnow
from opentess.db.models import Membership, User, Workspace
from opentess.errors import BadRequest, NotFound


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    email: str
    name: str
    default_workspace_id: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WorkspaceRecord:
    id: int
    name: str
    owner_id: int
    created_at: datetime


class UserStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(User))).scalar_one())

    async def create(self, email: str, name: str = "") -> tuple[UserRecord, WorkspaceRecord]:
        """Create a user with a personal workspace that becomes their default."""
        email = email.strip()
        if "@" not in email or len(email) > 320:
            raise BadRequest(f"not an email address: {email!r}")
        now = utcnow()
        try:
            async with self._engine.begin() as conn:
                user_id = (
                    await conn.execute(insert(User).values(email=email, name=name, created_at=now).returning(User.id))
                ).scalar_one()
                ws = await self._create_workspace(conn, f"{name or email}'s workspace", user_id, "owner")
                await conn.execute(update(User).where(User.id == user_id).values(default_workspace_id=ws.id))
        except IntegrityError as exc:
            raise BadRequest(f"a user with email {email} already exists") from exc
        return UserRecord(user_id, email, name, ws.id, now), ws

    async def by_email(self, email: str) -> UserRecord:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*User.__table__.c).where(User.email == email.strip()))).first()
        if row is None:
            raise NotFound(f"no user with email {email}")
        return UserRecord(row.id, row.email, row.name, row.default_workspace_id, row.created_at)

    async def create_workspace(self, name: str, owner_id: int) -> WorkspaceRecord:
        async with self._engine.begin() as conn:
            return await self._create_workspace(conn, name, owner_id, "owner")

    @staticmethod
    async def _create_workspace(conn: AsyncConnection, name: str, owner_id: int, role: str) -> WorkspaceRecord:
        now = utcnow()
        ws_id = (
            await conn.execute(
                insert(Workspace).values(name=name, owner_id=owner_id, created_at=now).returning(Workspace.id)
            )
        ).scalar_one()
        await conn.execute(insert(Membership).values(user_id=owner_id, workspace_id=ws_id, role=role, created_at=now))
        return WorkspaceRecord(ws_id, name, owner_id, now)

    async def list_workspaces(self) -> list[WorkspaceRecord]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(*Workspace.__table__.c).order_by(Workspace.id))).all()
        return [WorkspaceRecord(r.id, r.name, r.owner_id, r.created_at) for r in rows]

    async def workspace(self, workspace_id: int) -> WorkspaceRecord:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*Workspace.__table__.c).where(Workspace.id == workspace_id))).first()
        if row is None:
            raise NotFound(f"no workspace with id {workspace_id}")
        return WorkspaceRecord(row.id, row.name, row.owner_id, row.created_at)

    async def is_member(self, user_id: int, workspace_id: int) -> bool:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(Membership.user_id).where(
                        Membership.user_id == user_id, Membership.workspace_id == workspace_id
                    )
                )
            ).first()
        return row is not None
