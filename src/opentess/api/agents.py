"""Agents: the Tess listing and detail routes (contract §2), and the management API beyond Tess."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from opentess.agents import parse_spec, validate_spec
from opentess.api.errors import json_response
from opentess.api.pagination import envelope, page_of
from opentess.api.state import PrincipalDep, StateDep, read_json_object

router = APIRouter()


@router.get("/agents")
async def list_agents(request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """The caller's workspace's agents; ``q`` searches title and descriptions, ``type`` filters."""
    errors: dict[str, list[str]] = {}
    kind = request.query_params.get("type") or None
    if kind is not None and kind not in ("chat", "text"):
        errors["type"] = ["The selected type is invalid. Valid options: chat, text."]
    page = page_of(request, errors)
    agents, total = await state.store.agents.search(
        principal.workspace_id, q=request.query_params.get("q") or None, type=kind, offset=page.offset, limit=page.size
    )
    return json_response(200, envelope(request, [a.public() for a in agents], total, page))


@router.get("/agents/{agent_id:id}")
async def get_agent(agent_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    agent = await state.store.agents.get(agent_id, principal.workspace_id)
    return json_response(200, agent.public())


@router.post("/agents", status_code=201)
async def create_agent(request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Create an agent in the caller's workspace (beyond Tess). 422 names every invalid field."""
    spec = parse_spec(await read_json_object(request))
    await validate_spec(spec, state.settings.models, state.sandbox, state.settings.max_instructions_chars)
    agent = await state.store.agents.create(spec, principal.workspace_id)
    return json_response(201, agent.management())


@router.patch("/agents/{agent_id:id}")
async def update_agent(agent_id: int, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Change some fields of an agent; the result is validated as a whole."""
    agent = await state.store.agents.get(agent_id, principal.workspace_id)
    changes = await read_json_object(request)
    current = agent.spec().model_dump(exclude_none=True)
    current["questions"] = [q.model_dump(exclude_none=True) for q in agent.questions]
    spec = parse_spec({**current, **changes})
    await validate_spec(spec, state.settings.models, state.sandbox, state.settings.max_instructions_chars)
    updated = await state.store.agents.update(agent_id, principal.workspace_id, spec)
    return json_response(200, updated.management())


@router.delete("/agents/{agent_id:id}", status_code=204)
async def delete_agent(agent_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """Delete an agent; its executions stay readable."""
    await state.store.agents.delete(agent_id, principal.workspace_id)
    return Response(status_code=204)
