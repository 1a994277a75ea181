"""Agent webhooks (contract §10): register, list, delete — and beyond Tess, read one, change
one (turn it back on after the server disabled it) and see its deliveries, attempt by attempt.

A webhook belongs to the caller's workspace, like its agent; another workspace's is a 404. The
registered URL is checked at once (https, a public address, unless its host is in
``OPENTESS_WEBHOOK_ALLOW_HOSTS``) and again at every delivery (opentess.webhooks.safety)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from starlette.responses import Response

from opentess.api import routing, schemas
from opentess.api import webhook_schemas as ws
from opentess.api.bodies import read_json_object
from opentess.api.deps import AppState, PrincipalDep, StateDep
from opentess.api.errors import json_response
from opentess.api.pagination import envelope, page_of
from opentess.errors import InvalidInput
from opentess.ids import parse_id
from opentess.webhooks import safety, wire
from opentess.webhooks.outbox import Dispatcher
from opentess.webhooks.store import ACTIVE_STATUS, METHODS, STATUSES, WebhookStore

router = routing.router(tags=["Webhooks"])

MAX_PER_AGENT = 10


def _store(state: AppState) -> WebhookStore:
    store = state.capabilities["webhooks"].extras["store"]
    assert isinstance(store, WebhookStore)
    return store


def _dispatcher(state: AppState) -> Dispatcher:
    dispatcher = state.capabilities["webhooks"].extras["dispatcher"]
    assert isinstance(dispatcher, Dispatcher)
    return dispatcher


async def _url(value: Any, state: AppState, errors: dict[str, list[str]]) -> str:
    """A URL deliveries may go to; a refusal is a field error. A host that does not resolve now
    is accepted (deliveries check it again, each time)."""
    try:
        target = safety.parse(value, state.settings.webhook_allow_hosts)
    except safety.Refused as exc:
        errors["url"] = [str(exc)]
        return ""
    if not target.allowed:
        try:
            await safety.checked_addresses(target)
        except safety.Unresolvable:
            pass
        except safety.Refused as exc:
            errors["url"] = [str(exc)]
            return ""
    return str(value).strip()


def _choice(body: dict[str, Any], name: str, options: tuple[str, ...], errors: dict[str, list[str]]) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    text = value.strip().upper() if name == "method" and isinstance(value, str) else value
    if text not in options:
        errors[name] = [f"The selected {name} is invalid. Valid options: {', '.join(options)}."]
        return None
    return str(text)


@router.post(
    "/agents/{agent_id:id}/webhooks",
    status_code=201,
    response_model=ws.WebhookCreated,
    responses=schemas.native_errors(400, 404, 409),
    openapi_extra=schemas.documented_body(ws.WebhookCreate),
)
async def create_webhook(agent_id: int, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Register a webhook: each execution of the agent in this workspace that ends (succeeded,
    failed or cancelled) is sent to ``url``, signed with the secret in this answer (the only one
    that shows it). ``method`` defaults to POST, ``status`` to active."""
    agent = await state.store.agents.get(agent_id, principal.workspace_id)
    body = await read_json_object(request)
    errors: dict[str, list[str]] = {}
    url = await _url(body.get("url"), state, errors)
    method = _choice(body, "method", METHODS, errors) or "POST"
    status = _choice(body, "status", STATUSES, errors) or ACTIVE_STATUS
    if errors:
        raise InvalidInput(errors)
    record = await _store(state).create(
        workspace_id=principal.workspace_id,
        agent_id=agent.id,
        user_id=principal.user_id,
        url=url,
        method=method,
        status=status,
        limit=MAX_PER_AGENT,
    )
    if status == ACTIVE_STATUS:
        _dispatcher(state).note(agent.id)
    return json_response(201, wire.created(record))


@router.get("/agents/{agent_id:id}/webhooks", response_model=ws.WebhookPage, responses=schemas.native_errors(404))
async def list_agent_webhooks(
    agent_id: int,
    request: Request,
    principal: PrincipalDep,
    state: StateDep,
    page: schemas.PageQuery = None,
    per_page: schemas.PerPageQuery = None,
) -> Response:
    """The agent's webhooks, with their success and failure counts."""
    await state.store.agents.get(agent_id, principal.workspace_id)
    paging = page_of(request)
    records, total = await _store(state).page(
        principal.workspace_id, agent_id=agent_id, offset=paging.offset, limit=paging.size
    )
    return json_response(200, envelope(request, [wire.webhook(r) for r in records], total, paging))


@router.get("/webhooks", response_model=ws.WebhookPage, responses=schemas.native_errors())
async def list_webhooks(
    request: Request,
    principal: PrincipalDep,
    state: StateDep,
    agent_id: Annotated[str | None, Query(description="Only this agent's webhooks")] = None,
    page: schemas.PageQuery = None,
    per_page: schemas.PerPageQuery = None,
) -> Response:
    """Every webhook of the workspace's agents."""
    errors: dict[str, list[str]] = {}
    agent = None
    if agent_id not in (None, ""):
        agent = parse_id(agent_id)
        if agent is None:
            errors["agent_id"] = ["The agent_id field must be an id (a positive integer)."]
    paging = page_of(request, errors)
    records, total = await _store(state).page(
        principal.workspace_id, agent_id=agent, offset=paging.offset, limit=paging.size
    )
    return json_response(200, envelope(request, [wire.webhook(r) for r in records], total, paging))


@router.get("/webhooks/{webhook_id:id}", response_model=ws.WebhookOut, responses=schemas.native_errors(404))
async def get_webhook(webhook_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """One webhook (beyond Tess): its counters, and why the server disabled it, if it did."""
    return json_response(200, wire.webhook(await _store(state).get(webhook_id, principal.workspace_id)))


@router.patch(
    "/webhooks/{webhook_id:id}",
    response_model=ws.WebhookOut,
    responses=schemas.native_errors(400, 404),
    openapi_extra=schemas.documented_body(ws.WebhookUpdate),
)
async def update_webhook(webhook_id: int, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    """Change ``url``, ``method`` or ``status`` (beyond Tess). ``status: active`` turns a
    disabled webhook back on: executions that end from then on are delivered."""
    store = _store(state)
    current = await store.get(webhook_id, principal.workspace_id)
    body = await read_json_object(request)
    errors: dict[str, list[str]] = {}
    changes: dict[str, str] = {}
    if body.get("url") is not None:
        changes["url"] = await _url(body.get("url"), state, errors)
    for name, options in (("method", METHODS), ("status", STATUSES)):
        value = _choice(body, name, options, errors)
        if value is not None:
            changes[name] = value
    if errors:
        raise InvalidInput(errors)
    record = await store.update(webhook_id, principal.workspace_id, changes)
    if record.status == ACTIVE_STATUS:
        _dispatcher(state).note(current.agent_id)
    return json_response(200, wire.webhook(record))


@router.delete("/webhooks/{webhook_id:id}", response_model=ws.WebhookDeleted, responses=schemas.native_errors(404))
async def delete_webhook(webhook_id: int, principal: PrincipalDep, state: StateDep) -> Response:
    """Delete a webhook: nothing more is sent (deliveries still pending are cancelled)."""
    await _store(state).delete(webhook_id, principal.workspace_id)
    return json_response(200, {"message": "Webhook deleted successfully"})


@router.get(
    "/webhooks/{webhook_id:id}/deliveries", response_model=ws.DeliveryPage, responses=schemas.native_errors(404)
)
async def list_deliveries(
    webhook_id: int,
    request: Request,
    principal: PrincipalDep,
    state: StateDep,
    page: schemas.PageQuery = None,
    per_page: schemas.PerPageQuery = None,
) -> Response:
    """The webhook's deliveries, newest first (beyond Tess): one per execution, each with its
    attempts — when, the receiver's status code, how long it took, what went wrong."""
    store = _store(state)
    await store.get(webhook_id, principal.workspace_id)
    paging = page_of(request)
    records, total = await store.deliveries(webhook_id, offset=paging.offset, limit=paging.size)
    return json_response(200, envelope(request, [wire.delivery(r) for r in records], total, paging))
