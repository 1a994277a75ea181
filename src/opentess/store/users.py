"""Users, workspaces and memberships."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentess.clock import utcnow
from opentess.db.locking import conflict_insert
from opentess.db.models import Membership, User, Workspace
from opentess.errors import Conflict, Forbidden, InvalidInput, NotFound


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


@dataclass(frozen=True, slots=True)
class MemberRecord:
    user_id: int
    email: str
    name: str
    role: str  # "owner" | "member"
    joined_at: datetime


ROLES = ("owner", "member")


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
            raise InvalidInput({"email": [f"not an email address: {email!r}"]})
        now = utcnow()
        try:
            async with self._engine.begin() as conn:
                user_id = (
                    await conn.execute(insert(User).values(email=email, name=name, created_at=now).returning(User.id))
                ).scalar_one()
                ws = await self._create_workspace(conn, f"{name or email}'s workspace", user_id, "owner")
                await conn.execute(update(User).where(User.id == user_id).values(default_workspace_id=ws.id))
        except IntegrityError as exc:
            raise Conflict(f"a user with email {email} already exists") from exc
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

    async def list_users(self) -> list[UserRecord]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(*User.__table__.c).order_by(User.id))).all()
        return [UserRecord(r.id, r.email, r.name, r.default_workspace_id, r.created_at) for r in rows]

    async def get(self, user_id: int) -> UserRecord:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*User.__table__.c).where(User.id == user_id))).first()
        if row is None:
            raise NotFound(f"no user with id {user_id}")
        return UserRecord(row.id, row.email, row.name, row.default_workspace_id, row.created_at)

    async def workspaces_of(self, user_id: int) -> list[tuple[WorkspaceRecord, str]]:
        """The workspaces a user belongs to, with their role in each."""
        stmt = (
            select(*Workspace.__table__.c, Membership.role)
            .join(Membership, Membership.workspace_id == Workspace.id)
            .where(Membership.user_id == user_id)
            .order_by(Workspace.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(WorkspaceRecord(r.id, r.name, r.owner_id, r.created_at), r.role) for r in rows]

    async def role(self, user_id: int, workspace_id: int) -> str | None:
        async with self._engine.connect() as conn:
            return (
                await conn.execute(
                    select(Membership.role).where(
                        Membership.user_id == user_id, Membership.workspace_id == workspace_id
                    )
                )
            ).scalar_one_or_none()

    async def members(self, workspace_id: int) -> list[MemberRecord]:
        stmt = (
            select(User.id, User.email, User.name, Membership.role, Membership.created_at)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.workspace_id == workspace_id)
            .order_by(User.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [MemberRecord(*row) for row in rows]

    async def add_member(self, workspace_id: int, user_id: int, role: str = "member") -> MemberRecord:
        """Add a user to a workspace, or change their role there."""
        if role not in ROLES:
            raise InvalidInput({"role": [f"The role must be one of: {', '.join(ROLES)}."]})
        await self.workspace(workspace_id)
        user = await self.get(user_id)
        now = utcnow()
        # one statement (an update, then an insert when nothing was updated, let two concurrent
        # adds both insert, the second failing on the key)
        upsert = (
            conflict_insert(self._engine.dialect.name, Membership)
            .values(user_id=user_id, workspace_id=workspace_id, role=role, created_at=now)
            .on_conflict_do_update(index_elements=[Membership.user_id, Membership.workspace_id], set_={"role": role})
        )
        async with self._engine.begin() as conn:
            await conn.execute(upsert)
        member = next(m for m in await self.members(workspace_id) if m.user_id == user.id)
        return member

    async def remove_member(self, workspace_id: int, user_id: int) -> None:
        """Remove a user from a workspace; its owner (who created it) cannot be removed."""
        ws = await self.workspace(workspace_id)
        if ws.owner_id == user_id:
            raise Forbidden("The workspace's owner cannot be removed from it.")
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(Membership).where(Membership.user_id == user_id, Membership.workspace_id == workspace_id)
            )
        if result.rowcount == 0:
            raise NotFound(f"user {user_id} is not a member of workspace {workspace_id}")

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
