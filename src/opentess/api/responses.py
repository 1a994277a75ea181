"""Agent responses (executions): GET one (Tess), and beyond Tess: list with filters, cancel."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from opentess.api.errors import json_response
from opentess.api.pagination import envelope, page_of
from opentess.api.state import PrincipalDep, StateDep
from opentess.errors import Conflict, ServiceUnavailable, StillRunning
from opentess.ids import parse_id
from opentess.store.executions import ACTIVE, TERMINAL

router = APIRouter()

STATUSES = (*ACTIVE, *TERMINAL)
CANCEL_WAIT_S = 10.0


def _int_filter(request: Request, name: str, errors: dict[str, list[str]]) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    value = parse_id(raw)
    if value is not None:
        return value
    errors[name] = [f"The {name} field must be an id (a positive integer)."]
    return None


@router.get("/agent-responses")
async def list_responses(request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Executions of the caller's workspace, newest first unless ``sort=asc``; filters
    ``agent_id``, ``root_id`` (a whole conversation) and ``status``."""
    errors: dict[str, list[str]] = {}
    agent_id = _int_filter(request, "agent_id", errors)
    root_id = _int_filter(request, "root_id", errors)
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        errors["status"] = [f"The selected status is invalid. Valid options: {', '.join(STATUSES)}."]
    sort = (request.query_params.get("sort") or "desc").lower()
    if sort not in ("asc", "desc"):
        errors["sort"] = ["The selected sort is invalid. Valid options: asc, desc."]
    page = page_of(request, errors)
    records, total = await state.store.executions.search(
        principal.workspace_id,
        agent_id=agent_id,
        root_id=root_id,
        status=status,
        descending=sort == "desc",
        offset=page.offset,
        limit=page.size,
    )
    return json_response(200, envelope(request, [r.public() for r in records], total, page))


@router.get("/agent-responses/{execution_id:id}")
async def get_response(execution_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    record = await state.store.executions.get(execution_id, principal.workspace_id)
    return json_response(200, record.public())


@router.post("/agent-responses/{execution_id:id}/cancel")
async def cancel_response(execution_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """Stop a running execution; it ends ``cancelled`` with its partial output. Answers 200
    only with the stored end; a run that stopped but whose end is not stored yet is a 503, one
    that did not stop in time a 504."""
    record = await state.store.executions.get(execution_id, principal.workspace_id)
    if record.status in TERMINAL:
        raise Conflict(f"The agent response has already finished ({record.status}).")
    executions = state.store.executions
    if executions.unstored(execution_id):
        raise _end_not_stored()
    run = state.service.runs.get(execution_id)
    if run is not None:
        if run.cancel():
            try:
                await asyncio.wait_for(run.ended.wait(), timeout=CANCEL_WAIT_S)
            except TimeoutError:
                pass  # answered with whatever status is stored now
    elif state.cancel_bus.shared:
        # another process runs it: ask every process, then watch the stored status
        await state.cancel_bus.publish(execution_id)
        deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_S
        while asyncio.get_running_loop().time() < deadline:
            if (await state.store.executions.get(execution_id)).status in TERMINAL:
                break
            await asyncio.sleep(0.05)
    else:
        raise Conflict(
            "This agent response is not running in this server process "
            "(set OPENTESS_REDIS_URL to cancel across processes)."
        )
    stored = await executions.get(execution_id, principal.workspace_id)
    if stored.status not in TERMINAL:
        if executions.unstored(execution_id):
            raise _end_not_stored()
        raise StillRunning(f"The agent response did not stop within {CANCEL_WAIT_S:g} s; it is still {stored.status}.")
    body: dict[str, Any] = stored.public()
    return json_response(200, body)


def _end_not_stored() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The agent response has stopped, but its end could not be stored yet (the database is unavailable); "
        "the server stores it as soon as it can."
    )
