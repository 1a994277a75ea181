"""API tokens of the caller (beyond Tess): list, create, change limits, revoke."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from opentess.api import routing, schemas, wire
from opentess.api.bodies import read_json_object
from opentess.api.deps import AppState, PrincipalDep, StateDep
from opentess.api.errors import json_response
from opentess.auth import Principal
from opentess.authority import MAX_EXPIRY_DAYS, MAX_LIMIT, Ceiling, child_token, limit_change
from opentess.errors import NotFound, TokenNotFound, parse_model
from opentess.store import TokenRecord

router = routing.router()


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200)
    expires_in_days: float | None = Field(default=None, gt=0, le=MAX_EXPIRY_DAYS)
    rpm_limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    concurrency_limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)


class TokenUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    rpm_limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    concurrency_limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)


def _ceiling(principal: Principal, state: AppState) -> Ceiling:
    limits, settings = principal.limits, state.settings
    return Ceiling(
        principal.expires_at,
        limits.token_rpm,
        limits.token_concurrency,
        settings.rate_limit_rpm,
        settings.rate_limit_concurrency,
    )


async def _own(state: AppState, principal: Principal, token_id: int) -> TokenRecord:
    """The caller's own token; another user's token answers 404 like a missing one."""
    try:
        token: TokenRecord = await state.store.tokens.get(token_id)
    except NotFound as exc:
        raise TokenNotFound() from exc
    if token.user_id != principal.user_id:
        raise TokenNotFound()
    return token


@router.get("/tokens", response_model=schemas.TokenList, responses=schemas.native_errors())
async def list_tokens(principal: PrincipalDep, state: StateDep) -> Response:
    tokens = await state.store.tokens.for_user(principal.user_id)
    return json_response(200, {"data": [wire.token(t) for t in tokens]})


@router.post(
    "/tokens",
    status_code=201,
    response_model=schemas.TokenWithSecret,
    responses=schemas.native_errors(400),
    openapi_extra=schemas.documented_body(TokenCreate),
)
async def create_token(request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    spec = parse_model(TokenCreate, await read_json_object(request))
    record, secret = await create_for(state, principal, spec)
    return json_response(201, {**wire.token(record), "token": secret})


# the rules of these routes, shared with the console (opentess.web), whose session is a
# principal too: one copy of what a caller may do to tokens


async def create_for(state: AppState, principal: Principal, spec: TokenCreate) -> tuple[TokenRecord, str]:
    """A new token of the caller's user, never beyond the caller (opentess.authority)."""
    child = child_token(_ceiling(principal, state), spec.expires_in_days, spec.rpm_limit, spec.concurrency_limit)
    record, secret = await state.store.tokens.create(
        principal.user_id,
        spec.name,
        rpm_limit=child.rpm_limit,
        concurrency_limit=child.concurrency_limit,
        expires_at=child.expires_at,
        parent_id=principal.api_token_id,
    )
    state.auth.forget_tokens()
    return record, secret


@router.patch(
    "/tokens/{token_id:id}",
    response_model=schemas.Token,
    responses=schemas.native_errors(400, 404),
    openapi_extra=schemas.documented_body(TokenUpdate),
)
async def update_token(token_id: int, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    return json_response(200, wire.token(await update_for(state, principal, token_id, await read_json_object(request))))


async def update_for(state: AppState, principal: Principal, token_id: int, body: dict[str, Any]) -> TokenRecord:
    """Change a token of the caller's user: its name, and its limits only downwards."""
    target = await _own(state, principal, token_id)
    changes = parse_model(TokenUpdate, body).model_dump(include=set(body))
    if changes.get("name") is None:
        changes.pop("name", None)
    defaults = {"rpm_limit": state.settings.rate_limit_rpm, "concurrency_limit": state.settings.rate_limit_concurrency}
    for name, default in defaults.items():
        if name in changes:
            changes[name] = limit_change(
                _ceiling(principal, state),
                own=token_id == principal.token_id,
                name=name,
                current=getattr(target, name),
                asked=changes[name],
                default=default,
            )
    updated = await state.store.tokens.update(token_id, **changes)
    state.auth.forget_tokens()
    return updated


@router.delete("/tokens/{token_id:id}", response_model=schemas.Token, responses=schemas.native_errors(404))
async def revoke_token(token_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    return json_response(200, wire.token(await revoke_for(state, principal, token_id)))


async def revoke_for(state: AppState, principal: Principal, token_id: int) -> TokenRecord:
    """Revoke a token of the caller's user, and every token made from it."""
    await _own(state, principal, token_id)
    revoked = await state.store.tokens.revoke(token_id)
    state.auth.forget_tokens()
    return revoked
