"""Agent responses (executions): GET one (Tess), and beyond Tess: list with filters, cancel."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from opentess.api.errors import json_response
from opentess.api.pagination import envelope, page_of
from opentess.api.state import PrincipalDep, StateDep
from opentess.errors import OpentessError
from opentess.store.executions import ACTIVE, TERMINAL

router = APIRouter()

STATUSES = (*ACTIVE, *TERMINAL)
CANCEL_WAIT_S = 10.0


class Conflict(OpentessError):
    status = 409
    error = "Conflict"
    openai_type = "invalid_request_error"


def _int_filter(request: Request, name: str, errors: dict[str, list[str]]) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.strip().isdigit():
        return int(raw)
    errors[name] = [f"The {name} field must be an integer."]
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


@router.get("/agent-responses/{execution_id}")
async def get_response(execution_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    record = await state.store.executions.get(execution_id, principal.workspace_id)
    return json_response(200, record.public())


@router.post("/agent-responses/{execution_id}/cancel")
async def cancel_response(execution_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """Stop a running execution; it ends ``cancelled`` with its partial output."""
    record = await state.store.executions.get(execution_id, principal.workspace_id)
    if record.status in TERMINAL:
        raise Conflict(f"The agent response has already finished ({record.status}).")
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
    body: dict[str, Any] = (await state.store.executions.get(execution_id, principal.workspace_id)).public()
    return json_response(200, body)
