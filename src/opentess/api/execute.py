"""POST /agents/{id}/execute — native Tess execution (contract §4): wait, background, stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from opentess.api.errors import json_response
from opentess.api.sse import EventStreamResponse
from opentess.api.state import PrincipalDep, StateDep, read_json_object
from opentess.clock import laravel
from opentess.errors import OpentessError
from opentess.ids import parse_id
from opentess.runs import Run, RunCancelled, RunResult
from opentess.service import RunInput

log = logging.getLogger("opentess.api.execute")
router = APIRouter()

PAIR_RULE = "Chat messages must be a pair of user/assistant"
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def parse_flag(value: Any) -> bool | None:
    """A boolean sent as JSON or as a string ("true", "True", "1", "false", "0"); None if neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def _flag(body: dict[str, Any], request: Request, names: tuple[str, ...], errors: dict[str, list[str]]) -> bool:
    for name in names:
        for source in (body, request.query_params):
            if name in source and source[name] is not None:
                value = parse_flag(source[name])
                if value is None:
                    errors[name] = [f"The {name} field must be true or false."]
                    return False
                return value
    return False


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "\n".join(p["text"] for p in content)
    return None


def parse_messages(raw: Any, errors: dict[str, list[str]]) -> list[dict[str, str]]:
    """Tess's rules: an optional leading developer message, then user/assistant pairs ending with
    user. ``system`` is refused. Every problem is added to ``errors``."""
    if raw is None:
        errors["messages"] = ["The messages field is required."]
        return []
    if not isinstance(raw, list) or not raw:
        errors["messages"] = ["The messages field must be a non-empty array."]
        return []
    messages: list[dict[str, str]] = []
    for i, m in enumerate(raw):
        role = m.get("role") if isinstance(m, dict) else None
        text = _text(m.get("content")) if isinstance(m, dict) else None
        if not isinstance(m, dict):
            errors[f"messages.{i}"] = [f"The messages.{i} field must be an object with role and content."]
            continue
        if role == "system":
            errors[f"messages.{i}.role"] = [
                "The system role is not allowed; send instructions as a first message with role developer."
            ]
        elif role not in ("user", "assistant", "developer"):
            errors[f"messages.{i}.role"] = [f"The selected messages.{i}.role is invalid."]
        if text is None:
            errors[f"messages.{i}.content"] = [f"The messages.{i}.content field must be a string."]
        messages.append({"role": "system" if role == "developer" else str(role), "content": text or ""})
    if any(k.startswith("messages") for k in errors):
        return messages
    roles = [m["role"] for m in messages]
    if roles and roles[0] == "system":
        roles = roles[1:]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if not roles or roles != expected or roles[-1] != "user":
        errors["messages"] = [PAIR_RULE]
    return messages


def _root_id(body: dict[str, Any], errors: dict[str, list[str]]) -> int | None:
    root = body.get("root_id")
    if root in (None, "", 0, "0"):  # Langflow sends 0 for "no conversation"
        return None
    value = parse_id(root)
    if value is None:
        errors["root_id"] = ["The root_id field must be the id of an earlier execution (a positive integer)."]
    return value


def starting_object(run: Run) -> dict[str, Any]:
    """The execution object of a run that has just been stored (no read back needed)."""
    created = laravel(run.created_at)
    return {
        "id": run.id,
        "status": run.status,
        "input": run.plan.input_text,
        "output": None,
        "error": None,
        "credits": None,
        "root_id": run.root_id,
        "created_at": created,
        "updated_at": created,
        "template_id": run.plan.agent.id,
    }


@router.post("/agents/{agent_id:id}/execute")
async def execute(agent_id: int, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    agent = await state.store.agents.get_recent(agent_id, principal.workspace_id)
    body = await read_json_object(request)
    errors: dict[str, list[str]] = {}
    wait = _flag(body, request, ("waitExecution", "wait_execution"), errors)
    stream = _flag(body, request, ("stream",), errors) if "stream" in body else False
    messages = parse_messages(body.get("messages"), errors) if agent.type == "chat" else []
    run_input = RunInput(
        messages=messages,
        fields=body,
        temperature=body.get("temperature"),
        model=body.get("model"),
        tools=body.get("tools"),
        root_id=_root_id(body, errors),
    )
    plan = await state.service.prepare(principal, agent, run_input, lenient_model=False, errors=errors)
    if stream:
        run = await state.service.start(principal, plan, "execute")
        request.state.run = run
        return EventStreamResponse(
            _events(run),
            keepalive_s=state.settings.sse_keepalive_s,
            on_early_error=lambda exc: _failed_stream(run, exc),
            on_late_error=lambda exc: _event(_final_failure(run, exc)),
        )
    run = await state.service.start(principal, plan, "execute", status="starting")
    request.state.run = run
    answer = starting_object(run)
    task = state.service.runs.spawn(run.drain())
    if wait:
        await asyncio.wait({task}, timeout=state.settings.wait_limit_s)
        answer = (await state.store.executions.get(run.id)).public()
    return json_response(200, {"template_id": str(agent.id), "responses": [answer]})


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _events(run: Run) -> AsyncIterator[bytes]:
    """Tess execution events: ``running`` with only the new text, then ``completed``."""
    base = starting_object(run)
    base["status"] = "running"
    async for item in run.events():
        if isinstance(item, str):
            base["output"] = item
            yield _event(base)
        else:
            yield _event(_completed(base, item))


def _completed(base: dict[str, Any], result: RunResult) -> dict[str, Any]:
    return {
        **base,
        "status": "completed",
        "output": "",
        "credits": result.credits,
        "updated_at": laravel(result.updated_at),
    }


def _final_failure(run: Run, exc: BaseException) -> dict[str, Any]:
    obj = starting_object(run)
    if isinstance(exc, RunCancelled):
        obj.update(status="cancelled", error=exc.message)
    elif isinstance(exc, OpentessError):
        obj.update(status="failed", error=exc.message)
    else:
        log.error("execution %s failed", run.id, exc_info=exc)
        obj.update(status="failed", error="internal error")
    obj["output"] = ""
    return obj


def _failed_stream(run: Run, exc: BaseException) -> Response:
    """A run that fails before its first token still answers as a stream: its one event says so."""
    if not isinstance(exc, OpentessError):
        log.error("execution %s failed", run.id, exc_info=exc)
    return Response(
        _event(_final_failure(run, exc)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
