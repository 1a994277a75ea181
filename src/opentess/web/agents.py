"""Agents: the list with search, the editor (create, edit, preview) and delete. Saving takes
the path of ``POST /agents`` and ``PATCH /agents/{id}``: opentess.agents parses and validates the
definition (the sandbox trial-renders the instructions), the store keeps it in the visitor's
workspace; another workspace's agent is a 404."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from opentess.agents import AgentSpec, parse_spec, sample_values, validate_spec
from opentess.api.deps import AppState
from opentess.errors import Conflict, InvalidInput, TemplateProblem
from opentess.ids import parse_id
from opentess.store import AgentRecord
from opentess.toolsets.registry import catalog
from opentess.web import files as web_files
from opentess.web.agent_form import (
    QUESTION_TYPES,
    AgentForm,
    from_agent,
    normalise_defaults,
    read_form,
    sample_inputs,
    to_spec_data,
)
from opentess.web.console import Visitor, console_of, endpoint, form_of, page, ui_url
from opentess.web.render import fetch_page, page_number, paging, render

PER_PAGE = 25


def _state(request: Request) -> AppState:
    return console_of(request).state


@page
async def agents_list(request: Request, visitor: Visitor) -> Response:
    """The workspace's agents, searched by title and descriptions, filtered by type."""
    q = request.query_params.get("q", "").strip()
    kind = request.query_params.get("type", "")
    kind = kind if kind in ("chat", "text") else ""
    store = _state(request).store

    async def fetch(offset: int, limit: int) -> tuple[list[AgentRecord], int]:
        return await store.agents.search(
            visitor.workspace.id, q=q or None, type=kind or None, offset=offset, limit=limit
        )

    page_no = page_number(request.query_params.get("page"))
    agents, total, page_no = await fetch_page(page_no, PER_PAGE, fetch)

    def page_url(n: int) -> str:
        return "?" + urlencode({k: v for k, v in {"q": q, "type": kind, "page": n}.items() if v})

    return render(
        request,
        "agents.html",
        visitor,
        section="agents",
        agents=agents,
        total=total,
        q=q,
        kind=kind,
        **paging(page_no, total, PER_PAGE, page_url),
        notice=request.query_params.get("notice", ""),
    )


async def _editor(
    request: Request,
    visitor: Visitor,
    form: AgentForm,
    agent: AgentRecord | None,
    *,
    status: int = 200,
    files_errors: list[str] | None = None,
) -> Response:
    state = _state(request)
    toolsets = catalog(state.settings)
    return render(
        request,
        "agent_edit.html",
        visitor,
        status=status,
        section="agents",
        form=form,
        agent=agent,
        models=sorted(name for name, model in state.settings.models.items() if model.kind == "chat"),
        toolsets=sorted(toolsets.items()),
        toolset_names=set(toolsets),
        default_model=state.settings.default_model,
        question_types=QUESTION_TYPES,
        notice=request.query_params.get("notice", ""),
        files=await web_files.agent_files(state, visitor, agent) if agent is not None else None,
        files_errors=files_errors or [],
    )


def _new_form(state: AppState) -> AgentForm:
    return AgentForm(instructions="You are a helpful assistant.")


@page
async def agent_new(request: Request, visitor: Visitor) -> Response:
    return await _editor(request, visitor, _new_form(_state(request)), None)


async def _checked_spec(state: AppState, form: AgentForm, agent: AgentRecord | None = None) -> AgentSpec | None:
    """The submitted definition, validated as the API validates it; None (with the problems
    placed in ``form``) when it is not valid. An edit is merged into the agent's definition, as
    ``PATCH /agents/{id}`` merges (what the editor does not show is kept)."""
    data, errors = to_spec_data(form)
    if agent is not None:
        data = {**agent.spec().model_dump(exclude_none=True), **data}
    if errors:
        form.place(errors)
        return None
    try:
        spec = normalise_defaults(parse_spec(data))
        await validate_spec(spec, state.settings, state.sandbox)
    except InvalidInput as exc:
        form.place(exc.errors)
        return None
    return spec


@page
async def agent_create(request: Request, visitor: Visitor) -> Response:
    state = _state(request)
    form = read_form(await form_of(request))
    spec = await _checked_spec(state, form)
    if spec is None:
        return await _editor(request, visitor, form, None, status=422)
    try:
        agent = await state.store.agents.create(spec, visitor.workspace.id)
    except Conflict as exc:
        form.place({exc.param or "title": [exc.message]})
        return await _editor(request, visitor, form, None, status=409)
    return RedirectResponse(ui_url(request, f"/agents/{agent.id}?notice=created"), status_code=303)


@page
async def agent_edit(request: Request, visitor: Visitor) -> Response:
    agent = await _state(request).store.agents.get(request.path_params["agent_id"], visitor.workspace.id)
    return await _editor(request, visitor, from_agent(agent), agent)


@page
async def agent_update(request: Request, visitor: Visitor) -> Response:
    state = _state(request)
    agent = await state.store.agents.get(request.path_params["agent_id"], visitor.workspace.id)
    form = read_form(await form_of(request))
    spec = await _checked_spec(state, form, agent)
    if spec is None:
        return await _editor(request, visitor, form, agent, status=422)
    try:
        await state.store.agents.update(agent.id, visitor.workspace.id, spec)
    except Conflict as exc:
        form.place({exc.param or "title": [exc.message]})
        return await _editor(request, visitor, form, agent, status=409)
    return RedirectResponse(ui_url(request, f"/agents/{agent.id}?notice=saved"), status_code=303)


@page
async def agent_delete_confirm(request: Request, visitor: Visitor) -> Response:
    agent = await _state(request).store.agents.get(request.path_params["agent_id"], visitor.workspace.id)
    return render(request, "agent_delete.html", visitor, section="agents", agent=agent)


@page
async def agent_delete(request: Request, visitor: Visitor) -> Response:
    agent_id = request.path_params["agent_id"]
    await _state(request).store.agents.delete(agent_id, visitor.workspace.id)
    return RedirectResponse(ui_url(request, f"/agents?notice=deleted-{agent_id}"), status_code=303)


@endpoint
async def agent_preview(request: Request, visitor: Visitor) -> Response:
    """The instructions rendered for sample inputs, by the sandbox that renders them for runs;
    or the problems saving this definition would have, in the API's words."""
    state = _state(request)
    submitted = await form_of(request)
    form = read_form(submitted)
    spec = await _checked_spec(state, form)
    if spec is None:
        return JSONResponse({"rendered": None, "problems": _problems(form)})
    given, errors = sample_inputs(submitted, spec)
    if errors:
        return JSONResponse({"rendered": None, "problems": [m for ms in errors.values() for m in ms]})
    values: dict[str, Any] = {**sample_values(spec), **given}
    if "inputs" in values:  # every field by name, as the instructions source passes them
        values["inputs"] = {k: v for k, v in values.items() if k != "inputs"}
    try:
        rendered = await state.sandbox.render(spec.instructions, values)
    except TemplateProblem as exc:
        return JSONResponse({"rendered": None, "problems": [exc.message]})
    shown = {k: v for k, v in values.items() if k != "inputs"}
    return JSONResponse({"rendered": rendered, "problems": [], "values": shown})


def _problems(form: AgentForm) -> list[str]:
    lines = [f"{name}: {m}" for name, messages in form.errors.items() for m in messages]
    for i, messages in sorted(form.row_errors.items()):
        name = form.rows[i]["name"] or f"question {i + 1}"
        lines += [f"{name}: {m}" for m in messages]
    return lines + form.other_errors


# the agent's files ----------------------------------------------------------------------------------


def _on_agent_page(request: Request, visitor: Visitor, agent_id: int) -> web_files.ErrorPage:
    async def show(status: int, errors: list[str]) -> Response:
        agent = await _state(request).store.agents.get(agent_id, visitor.workspace.id)
        return await _editor(request, visitor, from_agent(agent), agent, status=status, files_errors=errors)

    return show


@page
async def agent_file_link(request: Request, visitor: Visitor) -> Response:
    """Link the file chosen in the form to this agent: ``POST /agents/{id}/files``."""
    form = await form_of(request)
    agent_id, file_id = request.path_params["agent_id"], parse_id(form.get("file_id"))
    action = web_files.link(_state(request), visitor, agent_id, file_id)
    on_error = _on_agent_page(request, visitor, agent_id)
    return await web_files.acted(request, f"/agents/{agent_id}", f"linked-{file_id}", action, on_error)


@page
async def agent_file_unlink(request: Request, visitor: Visitor) -> Response:
    """``DELETE /agents/{id}/files/{file_id}`` (the file stays)."""
    agent_id, file_id = request.path_params["agent_id"], request.path_params["file_id"]
    action = web_files.unlink(_state(request), visitor, agent_id, file_id)
    on_error = _on_agent_page(request, visitor, agent_id)
    return await web_files.acted(request, f"/agents/{agent_id}", f"unlinked-{file_id}", action, on_error)
