"""POST /agents/{id}/execute — native Tess execution (contract §4): wait, background, stream.

The route parses Tess's body (the wait flag in the body or the query, Tess's message rules,
every problem collected for one 422) into an ``ExecutionRequest``; the execution service does
the rest; the route encodes executions and execution events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import Query, Request
from starlette.responses import Response

from opentess.api import routing, schemas, wire
from opentess.api.bodies import read_json_object
from opentess.api.deps import CallerDep, StateDep
from opentess.api.errors import json_response, note_failure
from opentess.api.sse import EventStreamResponse
from opentess.clock import laravel
from opentess.errors import ExecutionCancelled, OpentessError
from opentess.executions.live import ExecutionResult, LiveExecution
from opentess.executions.request import ExecutionRequest, id_list
from opentess.executions.steps import StepStarted
from opentess.ids import parse_id
from opentess.providers import Sampling

log = logging.getLogger("opentess.api.execute")
router = routing.router()

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
    if isinstance(raw, str) and raw.strip():
        # clients that turn every question into a text field (Pipedream) send the message itself
        return [{"role": "user", "content": raw}]
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


def parse_request(body: dict[str, Any], request: Request) -> tuple[ExecutionRequest, bool, bool]:
    """(the execution request, wait?, stream?) with every problem found collected in its
    ``errors`` (the service adds its own and answers 422 naming them all)."""
    errors: dict[str, list[str]] = {}
    wait = _flag(body, request, ("waitExecution", "wait_execution"), errors)
    stream = _flag(body, request, ("stream",), errors) if "stream" in body else False
    execution_request = ExecutionRequest(
        messages=parse_messages(body.get("messages"), errors),
        fields=body,
        sampling=_sampling(body, errors),
        temperature=body.get("temperature"),
        model=body.get("model"),
        tools=body.get("tools"),
        root_id=_root_id(body, errors),
        file_ids=id_list(body.get("file_ids"), "file_ids", errors),
        memory_collections=id_list(body.get("memory_collections"), "memory_collections", errors),
        errors=errors,
    )
    return execution_request, wait, stream


def _sampling(body: dict[str, Any], errors: dict[str, list[str]]) -> Sampling:
    """``max_tokens`` / ``max_completion_tokens`` (the latter wins), as on the OpenAI route."""
    max_tokens = None
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None or value == "":
            continue
        number = parse_id(value)  # a positive integer, as digits or a JSON number
        if number is None or number > 2**31 - 1:
            errors[name] = [f"The {name} field must be a positive integer."]
        else:
            max_tokens = number
    return Sampling(max_tokens=max_tokens)


@router.post(
    "/agents/{agent_id:id}/execute",
    response_model=schemas.ExecuteResponse,
    responses={
        **schemas.native_errors(400, 404, 409, 502, 504),
        200: {
            "description": "The execution (or, with `stream`, its events as `text/event-stream`)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
    openapi_extra=schemas.documented_body(schemas.ExecuteRequest),
)
@router.post(
    "/templates/{agent_id:id}/execute",
    response_model=schemas.ExecuteResponse,
    responses={
        **schemas.native_errors(400, 404, 409, 502, 504),
        200: {
            "description": "The execution (or, with `stream`, its events as `text/event-stream`)",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
    openapi_extra=schemas.documented_body(schemas.ExecuteRequest),
    deprecated=True,
    tags=["legacy"],
)
async def execute(
    agent_id: int,
    request: Request,
    caller: CallerDep,
    state: StateDep,
    waitExecution: Annotated[str | None, Query(description="Wait for the end (true/false)")] = None,
    wait_execution: Annotated[str | None, Query(description="The same, snake_case")] = None,
) -> Response:
    """Run the agent: in the background (answers at once, `starting`), waiting for the end (up
    to the wait limit), or streaming execution events."""
    body = await read_json_object(request, empty_is_object=True)
    execution_request, wait, stream = parse_request(body, request)
    service = state.service
    if stream:
        live = await service.start(caller, agent_id, execution_request, source="execute")
        request.state.execution = live
        return EventStreamResponse(
            _events(live, service.stream(live)),
            keepalive_s=state.settings.sse_keepalive_s,
            on_early_error=lambda exc: _failed_stream(request, live, exc),
            on_late_error=lambda exc: _event(_final_failure(request, live, exc)),
            keepalive_throughout=live.plan.program is not None,
        )
    live = await service.start(caller, agent_id, execution_request, source="execute", background=True)
    request.state.execution = live
    answer = wire.live_execution(live)
    task = service.run_in_background(live)
    if wait:
        await service.wait(task, state.settings.wait_limit_s)
        answer = wire.execution(await state.store.executions.get(live.id))
    return json_response(200, {"template_id": str(live.plan.agent_id), "responses": [answer]})


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _events(
    live: LiveExecution, events: AsyncIterator[str | StepStarted | ExecutionResult]
) -> AsyncIterator[bytes]:
    """Tess execution events: ``running`` with only the new text, then ``completed``. A run
    driven by a toolset also sends a ``running`` event with no text as each step begins, its
    ``step`` saying which (the index, the tool and its arguments)."""
    base = wire.live_execution(live)
    base["status"] = "running"
    async for item in events:
        if isinstance(item, str):
            base["output"] = item
            yield _event(base)
        elif isinstance(item, StepStarted):
            step = item.step.stored()
            yield _event({**base, "output": "", "step": {k: step[k] for k in ("index", "tool", "arguments")}})
        else:
            yield _event(_completed(live, base, item))


def _completed(live: LiveExecution, base: dict[str, Any], result: ExecutionResult) -> dict[str, Any]:
    return {
        **base,
        "status": "completed",
        "output": "",
        "credits": result.credits,
        "updated_at": laravel(result.updated_at),
        **wire.toolset_fields(live),
    }


def _final_failure(request: Request, live: LiveExecution, exc: BaseException) -> dict[str, Any]:
    note_failure(request.scope, exc)
    obj = wire.live_execution(live)
    if isinstance(exc, ExecutionCancelled):
        obj.update(status="cancelled", error=exc.message)
    elif isinstance(exc, OpentessError):
        obj.update(status="failed", error=exc.message)
    else:
        log.error("execution %s failed", live.id, exc_info=exc)
        obj.update(status="failed", error="internal error")
    obj["output"] = ""
    return obj


def _failed_stream(request: Request, live: LiveExecution, exc: BaseException) -> Response:
    """An execution that fails before its first token still answers as a stream: its one event
    says so."""
    return Response(
        _event(_final_failure(request, live, exc)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
