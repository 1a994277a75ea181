"""What a token may do to tokens (the rule behind POST/PATCH /tokens).

An operator (the CLI) sets a token's expiry and limits; a token is then the most its holder can
do. Through the API a token may create tokens for its user and change their names and limits,
but never beyond itself:

- a token it creates expires no later than it does (no expiry asked → its own expiry), and its
  limits are at most its own (none asked → the server default if that is no wider, else its
  own); asking for more is refused (403);
- a token cannot change its own limits;
- the limits of another token of the user can only be lowered, never raised or removed, and
  never above the caller's own;
- revoking a token revokes every token made from it (opentess.store.tokens.revoke).

Only the operator widens: ``opentess tokens limits`` and ``opentess tokens create``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from opentess.clock import utcnow
from opentess.errors import Forbidden, InvalidInput

MAX_EXPIRY_DAYS = 36_500  # a hundred years: beyond it, say "no expiry"
MAX_LIMIT = 2**31 - 1  # the columns are 32-bit integers


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The caller's own expiry and effective limits (None: unlimited), and the server's
    defaults (what a token without limits of its own gets)."""

    expires_at: datetime | None
    rpm: int | None
    concurrency: int | None
    default_rpm: int | None = None
    default_concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class ChildToken:
    expires_at: datetime | None
    rpm_limit: int | None
    concurrency_limit: int | None


def _at_most(value: int | None, ceiling: int | None, default: int | None, name: str) -> int | None:
    if ceiling is None:
        return value
    if value is None:  # the server default, unless it is wider than the creator's own limit
        return None if default is not None and default <= ceiling else ceiling
    if value > ceiling:
        raise Forbidden(f"A token cannot give another token a higher {name} than its own ({ceiling}).", param=name)
    return value


def child_token(
    ceiling: Ceiling, expires_in_days: float | None, rpm_limit: int | None, concurrency_limit: int | None
) -> ChildToken:
    """The expiry and limits of a token created by a token with ``ceiling``."""
    expires_at = ceiling.expires_at
    if expires_in_days is not None:
        if expires_in_days > MAX_EXPIRY_DAYS:
            raise InvalidInput({"expires_in_days": [f"The expires_in_days field must be at most {MAX_EXPIRY_DAYS}."]})
        asked = utcnow() + timedelta(days=expires_in_days)
        if ceiling.expires_at is not None and asked > ceiling.expires_at:
            raise Forbidden(
                "A token cannot create a token that outlives it "
                f"(this one expires at {ceiling.expires_at.isoformat()}Z).",
                param="expires_in_days",
            )
        expires_at = asked
    return ChildToken(
        expires_at,
        _at_most(rpm_limit, ceiling.rpm, ceiling.default_rpm, "rpm_limit"),
        _at_most(concurrency_limit, ceiling.concurrency, ceiling.default_concurrency, "concurrency_limit"),
    )


def limit_change(
    ceiling: Ceiling, *, own: bool, name: str, current: int | None, asked: int | None, default: int | None
) -> int | None:
    """The new value of one limit of a token (``current``; None: the server default
    ``default``) set through the API to ``asked`` (None: back to the default)."""
    if own:
        raise Forbidden("A token cannot change its own limits; ask the operator.", param=name)
    effective_now = current if current is not None else default
    effective_asked = asked if asked is not None else default
    caller = ceiling.rpm if name == "rpm_limit" else ceiling.concurrency
    for bound, whose in ((effective_now, "its current"), (caller, "the caller's own")):
        if bound is not None and (effective_asked is None or effective_asked > bound):
            raise Forbidden(
                f"Limits can only be lowered through the API: {name} may not exceed {whose} value ({bound}).",
                param=name,
            )
    return asked
