"""API tokens: the secret is shown once; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.clock import utcnow
from opentess.db.models import ApiToken, User
from opentess.errors import NotFound

TOKEN_PREFIX = "ot_"


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    user_id: int
    user_email: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    default_workspace_id: int | None
    rpm_limit: int | None = None
    concurrency_limit: int | None = None
    parent_id: int | None = None


_COLUMNS = (*ApiToken.__table__.c, User.email.label("user_email"), User.default_workspace_id)


def _record(row: object) -> TokenRecord:
    r = row._mapping  # type: ignore[attr-defined]
    return TokenRecord(
        r["id"], r["user_id"], r["user_email"], r["name"], r["prefix"], r["created_at"],
        r["expires_at"], r["revoked_at"], r["last_used_at"], r["default_workspace_id"], r["rpm_limit"],
        r["concurrency_limit"], r["parent_id"],
    )  # fmt: skip


class TokenStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self,
        user_id: int,
        name: str = "",
        expires_in_days: float | None = None,
        rpm_limit: int | None = None,
        concurrency_limit: int | None = None,
        *,
        expires_at: datetime | None = None,
        parent_id: int | None = None,
    ) -> tuple[TokenRecord, str]:
        """Create a token; returns its record and the secret, which is never retrievable again.
        ``expires_at`` (exact) wins over ``expires_in_days``."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        expires = expires_at
        if expires is None and expires_in_days is not None:
            expires = now + timedelta(days=expires_in_days)
        async with self._engine.begin() as conn:
            token_id = (
                await conn.execute(
                    insert(ApiToken)
                    .values(
                        user_id=user_id, name=name, token_hash=hash_token(secret), prefix=secret[:10],
                        created_at=now, expires_at=expires, rpm_limit=rpm_limit,
                        concurrency_limit=concurrency_limit, parent_id=parent_id,
                    )
                    .returning(ApiToken.id)
                )
            ).scalar_one()  # fmt: skip
        return await self.get(token_id), secret

    async def get(self, token_id: int) -> TokenRecord:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).join(User, User.id == ApiToken.user_id).where(ApiToken.id == token_id)
                )
            ).first()
        if row is None:
            raise NotFound(f"no token with id {token_id}")
        return _record(row)

    async def by_hash(self, token_hash: str) -> TokenRecord | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(*_COLUMNS).join(User, User.id == ApiToken.user_id).where(ApiToken.token_hash == token_hash)
                )
            ).first()
        return None if row is None else _record(row)

    async def list_all(self) -> list[TokenRecord]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(select(*_COLUMNS).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id))
            ).all()
        return [_record(r) for r in rows]

    async def revoke(self, token_id: int) -> TokenRecord:
        """Revoke a token and every token made from it through the API, at any depth (a
        stolen token cannot leave a copy of itself behind)."""
        record = await self.get(token_id)  # raises NotFound for an unknown id
        now = utcnow()
        async with self._engine.begin() as conn:
            wave = [token_id]
            seen = set(wave)
            while wave:
                await conn.execute(
                    update(ApiToken).where(ApiToken.id.in_(wave), ApiToken.revoked_at.is_(None)).values(revoked_at=now)
                )
                children = (await conn.execute(select(ApiToken.id).where(ApiToken.parent_id.in_(wave)))).scalars()
                wave = [c for c in children if c not in seen]
                seen.update(wave)
        return record if record.revoked_at is not None else await self.get(token_id)

    async def update(self, token_id: int, **values: object) -> TokenRecord:
        """Change a token's name or limits (``rpm_limit``/``concurrency_limit``; None = server default)."""
        allowed = {"name", "rpm_limit", "concurrency_limit"}
        assert set(values) <= allowed, set(values) - allowed
        if values:
            async with self._engine.begin() as conn:
                await conn.execute(update(ApiToken).where(ApiToken.id == token_id).values(**values))
        return await self.get(token_id)

    async def for_user(self, user_id: int) -> list[TokenRecord]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(*_COLUMNS)
                    .join(User, User.id == ApiToken.user_id)
                    .where(ApiToken.user_id == user_id)
                    .order_by(ApiToken.id)
                )
            ).all()
        return [_record(r) for r in rows]

    async def touch(self, token_id: int, when: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=when))
