"""The long-lived objects of one server process (opened and closed by the app's lifespan), and
the dependencies routes take them through.

Two principals: ``PrincipalDep`` (authenticated, and the request counted against the caller's
per-minute limits) for every route, and ``CallerDep`` (authenticated only) for the routes that
hand the call to the execution service, which counts it itself together with its concurrency
slot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Scope

from opentess.auth import Authenticator, Principal
from opentess.capabilities import Capability
from opentess.coordination import CancelBus
from opentess.executions.service import ExecutionService
from opentess.jobs import JobQueue, JobRunner
from opentess.limits import Admission
from opentess.providers import ModelRegistry
from opentess.sandbox import TemplateSandbox
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
    admission: Admission
    cancel_bus: CancelBus
    sandbox: TemplateSandbox
    jobs: JobQueue
    runner: JobRunner
    capabilities: dict[str, Capability] = field(default_factory=dict)


STATE_ATTRIBUTE = "opentess_state"


def app_state(request: Request) -> AppState:
    """The server's objects."""
    return state_of(request.scope)


def state_of(scope: Scope) -> AppState:
    """The server's objects, from a request's scope. Read from a plain attribute of the app,
    which the lifespan sets beside ``app.state.opentess``: Starlette's ``State`` finds its items
    only after a failed attribute lookup (an exception made and dropped), on every request."""
    app = scope["app"]
    state: AppState | None = getattr(app, STATE_ATTRIBUTE, None)
    if state is None:
        state = app.state.opentess
    assert state is not None
    return state


async def get_state(request: Request) -> AppState:
    # async on purpose: FastAPI runs a sync dependency in a worker thread, a costly hop per request
    return app_state(request)


StateDep = Annotated[AppState, Depends(get_state)]


async def authenticate(request: Request, state: AppState) -> Principal:
    """The caller of ``request``; its rate limits are not counted here."""
    return await state.auth.authenticate(request.headers.get("authorization"), request.headers.get("x-workspace-id"))


async def get_caller(request: Request, state: StateDep) -> Principal:
    return await authenticate(request, state)


async def get_principal(request: Request, state: StateDep) -> Principal:
    principal = await authenticate(request, state)
    await state.admission.check_request(principal.token_id, principal.workspace_id, principal.limits)
    return principal


CallerDep = Annotated[Principal, Depends(get_caller)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
