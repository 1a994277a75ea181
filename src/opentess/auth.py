"""Who is calling: bearer token → user → workspace (contract §1)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

from opentess.cache import TTLCache
from opentess.clock import utcnow
from opentess.errors import Forbidden, InvalidHeader, Unauthenticated
from opentess.ids import parse_id
from opentess.limits import Limits
from opentess.settings import Settings
from opentess.store import Store, TokenRecord
from opentess.store.tokens import hash_token

# last_used_at is a hint for operators, not an audit log: write it at most once a minute per token
_TOUCH_EVERY_S = 60.0
CACHE_TTL_S = 1.0


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    user_id: int
    workspace_id: int
    limits: Limits
    expires_at: datetime | None = None

    @property
    def api_token_id(self) -> int | None:
        """The API token this caller authenticated with; None for a console session (opentess.web),
        whose ``token_id`` is its session's id negated: it keys the per-token limits apart from
        every token and names no row of ``api_tokens``."""
        return self.token_id if self.token_id > 0 else None


class Authenticator:
    """Resolves the caller: token → user → workspace, with the limits that apply to them
    (counting requests against those limits is opentess.limits.Admission's)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._defaults = settings
        # no database read per request: tokens and memberships are re-read at most once a
        # second, so a revocation reaches every process within one second
        self._tokens: TTLCache[str, TokenRecord | None] = TTLCache(CACHE_TTL_S)
        self._members: TTLCache[tuple[int, int], bool] = TTLCache(CACHE_TTL_S)
        # unknown secrets too, so that a flood of bad tokens costs no database reads (bounded)
        self._unknown: TTLCache[str, bool] = TTLCache(CACHE_TTL_S, max_entries=10_000)
        self._touched: dict[int, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def authenticate(self, authorization: str | None, workspace_header: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("Missing API token: send 'Authorization: Bearer <token>'")
        scheme, _, secret = authorization.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Unauthenticated("Malformed Authorization header: expected 'Bearer <token>'")
        token = await self._token(secret)
        if token is None:
            raise Unauthenticated("Invalid API token")
        now = utcnow()
        if token.revoked_at is not None:
            raise Unauthenticated("This API token has been revoked")
        if token.expires_at is not None and token.expires_at <= now:
            raise Unauthenticated("This API token has expired")
        workspace_id = await self._workspace(token.user_id, token.default_workspace_id, workspace_header)
        self._touch(token.id)
        return Principal(token.id, token.user_id, workspace_id, self._limits(token), token.expires_at)

    def _limits(self, token: TokenRecord) -> Limits:
        d = self._defaults
        return Limits(
            token_rpm=token.rpm_limit if token.rpm_limit is not None else d.rate_limit_rpm,
            token_concurrency=token.concurrency_limit
            if token.concurrency_limit is not None
            else d.rate_limit_concurrency,
            workspace_rpm=d.workspace_rate_limit_rpm,
            workspace_concurrency=d.workspace_rate_limit_concurrency,
        )

    def forget_tokens(self) -> None:
        """Drop cached tokens now (this process created, revoked or changed one; others follow
        within 1 s)."""
        self._tokens.clear()
        self._unknown.clear()

    def forget_memberships(self) -> None:
        """Drop cached memberships now (this process changed one; others follow within 1 s)."""
        self._members.clear()

    async def _token(self, secret: str) -> TokenRecord | None:
        key = hash_token(secret)
        if self._unknown.get(key):
            return None
        token = await self._tokens.get_or_load(key, lambda: self._store.tokens.by_hash(key))
        if token is None:  # kept apart, so that a flood of bad secrets cannot evict good tokens
            self._tokens.discard(key)
            self._unknown.put(key, True)
        return token

    async def _workspace(self, user_id: int, default: int | None, header: str | None) -> int:
        if header is None or header.strip() == "":
            if default is None:
                raise Forbidden("This user has no default workspace; send x-workspace-id")
            return default
        workspace_id = parse_id(header)
        if workspace_id is None:
            raise InvalidHeader({"x-workspace-id": ["The x-workspace-id header must be a workspace id (an integer)."]})
        if workspace_id != default:
            member = await self._members.get_or_load(
                (user_id, workspace_id), lambda: self._store.users.is_member(user_id, workspace_id)
            )
            if not member:
                raise Forbidden("You do not belong to this workspace")
        return workspace_id

    def _touch(self, token_id: int) -> None:
        now = time.monotonic()
        if now - self._touched.get(token_id, -_TOUCH_EVERY_S) < _TOUCH_EVERY_S:
            return
        self._touched[token_id] = now
        task = asyncio.get_running_loop().create_task(self._store.tokens.touch(token_id, utcnow()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for pending last_used_at writes (shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
