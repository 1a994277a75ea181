"""The console's repository: passwords (a column of ``users``), sessions and the signing key.
Core statements over the server's engine, like opentess.store."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.clock import utcnow
from opentess.db.models import User
from opentess.web.tables import ConsoleKey, ConsoleSession

SIGNING_KEY = "signing"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Account:
    user_id: int
    email: str
    password_hash: str | None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: int
    user_id: int
    workspace_id: int | None
    created_at: datetime
    expires_at: datetime


class Accounts:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # the signing key ------------------------------------------------------------------------

    async def signing_key(self) -> str:
        """The key every process signs with: read, or made by whichever process comes first."""
        async with self._engine.connect() as conn:
            value = (await conn.execute(select(ConsoleKey.value).where(ConsoleKey.name == SIGNING_KEY))).scalar()
        if value is not None:
            return str(value)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(ConsoleKey).values(name=SIGNING_KEY, value=secrets.token_urlsafe(48), created_at=utcnow())
                )
        except IntegrityError:
            pass  # another process made it first: use theirs
        return await self.signing_key()

    # passwords ------------------------------------------------------------------------------

    async def by_email(self, email: str) -> Account | None:
        stmt = select(User.id, User.email, User.password_hash).where(User.email == email.strip())
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else Account(row.id, row.email, row.password_hash)

    async def by_id(self, user_id: int) -> Account | None:
        stmt = select(User.id, User.email, User.password_hash).where(User.id == user_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else Account(row.id, row.email, row.password_hash)

    async def set_password(self, user_id: int, password_hash: str, *, only_if_unset: bool = False) -> bool:
        """Store a new password and end every console session of the user (a password change
        signs out the browsers that knew the old one). ``only_if_unset``: only when the user has
        none yet (a setup link works once); returns whether the password was stored."""
        stmt = update(User).where(User.id == user_id).values(password_hash=password_hash)
        if only_if_unset:
            stmt = stmt.where(User.password_hash.is_(None))
        async with self._engine.begin() as conn:
            changed = (await conn.execute(stmt)).rowcount
            if changed:
                await conn.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))
        return bool(changed)

    async def rehash(self, user_id: int, old_hash: str, new_hash: str) -> None:
        """Replace a hash made with older parameters (sessions stay: the password is the same)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(User).where(User.id == user_id, User.password_hash == old_hash).values(password_hash=new_hash)
            )

    async def first_without_password(self) -> Account | None:
        """The oldest user, while no user has a password yet (whom a first start's setup link
        is for); None once anybody can sign in."""
        async with self._engine.connect() as conn:
            anybody = (await conn.execute(select(User.id).where(User.password_hash.is_not(None)).limit(1))).first()
            if anybody is not None:
                return None
            row = (await conn.execute(select(User.id, User.email).order_by(User.id).limit(1))).first()
        return None if row is None else Account(row.id, row.email, None)

    # sessions -------------------------------------------------------------------------------

    async def open_session(self, user_id: int, workspace_id: int | None, lifetime: timedelta) -> str:
        """A new session; returns its secret (the cookie's content, never stored as such).
        Sessions past their end are deleted on the way."""
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        async with self._engine.begin() as conn:
            await conn.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
            await conn.execute(
                insert(ConsoleSession).values(
                    user_id=user_id,
                    secret_hash=_digest(secret),
                    workspace_id=workspace_id,
                    created_at=now,
                    expires_at=now + lifetime,
                )
            )
        return secret

    async def session(self, secret: str) -> SessionRecord | None:
        """The live session with this secret; None when unknown, ended or past its end."""
        stmt = select(*ConsoleSession.__table__.c).where(
            ConsoleSession.secret_hash == _digest(secret), ConsoleSession.expires_at > utcnow()
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        return SessionRecord(row.id, row.user_id, row.workspace_id, row.created_at, row.expires_at)

    async def choose_workspace(self, session_id: int, workspace_id: int) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(ConsoleSession).where(ConsoleSession.id == session_id).values(workspace_id=workspace_id)
            )

    async def end_session(self, secret: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(ConsoleSession).where(ConsoleSession.secret_hash == _digest(secret)))

    async def end_sessions(self, user_id: int) -> int:
        async with self._engine.begin() as conn:
            return int((await conn.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))).rowcount)
