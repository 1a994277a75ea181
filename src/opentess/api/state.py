"""The long-lived objects of one server process, opened and closed by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.auth import Authenticator, Principal
from opentess.coordination import CancelBus
from opentess.errors import BadRequest
from opentess.providers import ModelRegistry
from opentess.sandbox import TemplateSandbox
from opentess.service import ExecutionService
from opentess.settings import Settings
from opentess.store import Store


@dataclass(slots=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    store: Store
    models: ModelRegistry
    service: ExecutionService
    auth: Authenticator
    cancel_bus: CancelBus
    sandbox: TemplateSandbox


async def get_state(request: Request) -> AppState:
    # async on purpose: FastAPI runs a sync dependency in a worker thread, a costly hop per request
    state: AppState = request.app.state.opentess
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_principal(request: Request, state: StateDep) -> Principal:
    return await authenticate(request, state)


async def authenticate(request: Request, state: AppState) -> Principal:
    """The caller of ``request`` (for hot routes that skip dependency injection)."""
    return await state.auth.authenticate(request.headers.get("authorization"), request.headers.get("x-workspace-id"))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a clear 400."""
    raw = await request.body()
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body
