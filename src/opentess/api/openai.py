"""POST /agents/{id}/openai/chat/completions — the OpenAI-compatible endpoint (contract §3).

The hot route: a plain Starlette ``Route`` first in the router, whose endpoint is an ASGI
callable (no dependency injection, no per-route wrapper; measured, nearly all of a framework
route's cost), behind every middleware like any route. Parsing is hand-written rather than a
pydantic model: the body is free-form OpenAI JSON and every rejection must name its parameter;
the published schema (``opentess.api.schemas.ChatCompletionRequest``) says what it accepts."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from opentess.api import routing, schemas, wire
from opentess.api.bodies import json_object, receive_body
from opentess.api.deps import AppState, app_state, authenticate, state_of
from opentess.api.errors import json_response, note_failure, openai_error, render
from opentess.api.observability import next_request_id
from opentess.api.sse import EventStreamResponse, unless_disconnected
from opentess.errors import BadRequest, NotFound, OpentessError
from opentess.executions.live import ExecutionResult, LiveExecution
from opentess.executions.request import ExecutionRequest, id_list
from opentess.executions.steps import StepStarted
from opentess.ids import parse_id
from opentess.providers import Sampling
from opentess.questions import default_of

log = logging.getLogger("opentess.api.openai")
PATH = schemas.CHAT_PATH

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# OpenAI parameters that would change the answer in ways we cannot honour: rejected unless neutral
_NEUTRAL = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "tool_choice": (None, "none", "auto"),
    "audio": (None,),
    "prediction": (None,),
    "web_search_options": (None,),
}


def _bad(message: str, param: str) -> BadRequest:
    return BadRequest(message, param=param)


def _content_text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _bad(
                    f"Only text content parts are supported; {param}[{i}] is of type {kind!r}.",
                    f"{param}[{i}]",
                )
            texts.append(part["text"])
        return "\n".join(texts)
    raise _bad(f"{param} must be a string or a list of content parts.", param)


def parse_messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise _bad("messages must be a non-empty array of chat messages.", "messages")
    messages = []
    for i, m in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(f"{param} must be an object with role and content.", param)
        raw_role = m.get("role")
        role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise _bad(
                f"{param}.role must be one of system, developer, user, assistant; got {m.get('role')!r}.",
                f"{param}.role",
            )
        if m.get("tool_calls") or m.get("function_call"):
            raise _bad("Tool calls are not supported by this endpoint.", f"{param}.tool_calls")
        messages.append({"role": role, "content": _content_text(m.get("content"), f"{param}.content")})
    if messages[-1]["role"] != "user":
        raise _bad("The last message must have role 'user'.", "messages")
    return messages


def _number(body: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _bad(f"{key} must be a number between {lo:g} and {hi:g}.", key)
    return float(value)


def _int(body: dict[str, Any], key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(f"{key} must be an integer of at least {minimum}.", key)
    return value


# the parameters parsed into Sampling; a body with none of them (most) shares one Sampling
_SAMPLING_KEYS = frozenset(
    {"max_completion_tokens", "max_tokens", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"}
)
_NO_SAMPLING = Sampling()


def parse_request(body: dict[str, Any]) -> tuple[ExecutionRequest, bool, bool]:
    """(the execution request, stream?, include usage chunk?) or BadRequest naming the parameter.
    Each optional parameter is looked at only when it is present: this runs on every call."""
    if not _NEUTRAL.keys().isdisjoint(body):
        for key, allowed in _NEUTRAL.items():
            if key in body and body[key] not in allowed:
                raise _bad(f"{key}={body[key]!r} is not supported by this endpoint.", key)
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise _bad('Only response_format {"type": "text"} is supported.', "response_format")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise _bad("Only the text modality is supported.", "modalities")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("stream must be a boolean.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("stream_options must be an object.", "stream_options")
    sampling = _sampling(body) if not _SAMPLING_KEYS.isdisjoint(body) else _NO_SAMPLING
    root = body.get("root_id")
    if root in ("", 0, "0"):  # clients send 0 or "" for "no conversation"
        root = None
    if root is not None:
        root = parse_id(root)
        if root is None:
            raise _bad("root_id must be the id of an earlier execution (a positive integer).", "root_id")
    temperature = body.get("temperature")
    if isinstance(temperature, bool):
        raise _bad("temperature must be a number.", "temperature")
    file_ids: list[int] = []
    collections: list[int] = []
    if "file_ids" in body or "memory_collections" in body:
        id_errors: dict[str, list[str]] = {}
        file_ids = id_list(body.get("file_ids"), "file_ids", id_errors)
        collections = id_list(body.get("memory_collections"), "memory_collections", id_errors)
        if id_errors:
            name, problems = next(iter(id_errors.items()))
            raise _bad(problems[0], name)
    request = ExecutionRequest(
        messages=parse_messages(body.get("messages")),
        file_ids=file_ids,
        memory_collections=collections,
        fields=body,
        sampling=sampling,
        temperature=temperature,
        model=body.get("model"),
        tools=body.get("tools"),
        root_id=root,
        lenient_model=True,
    )
    return request, stream, bool(options.get("include_usage"))


def _sampling(body: dict[str, Any]) -> Sampling:
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = stop
    else:
        raise _bad("stop must be a string or an array of up to 4 strings.", "stop")
    max_tokens = _int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad("seed must be an integer.", "seed")
    return Sampling(
        max_tokens=max_tokens,
        top_p=_number(body, "top_p", 0, 1),
        stop=tuple(stops),
        seed=seed,
        presence_penalty=_number(body, "presence_penalty", -2, 2),
        frequency_penalty=_number(body, "frequency_penalty", -2, 2),
    )


def _usage(result: ExecutionResult) -> dict[str, int]:
    c = result.completion
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }


class ChatCompletions:
    """The route's ASGI endpoint."""

    route: Route | None = None  # its route, named in the scope for the metrics and logs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route
        response = await self.handle(scope["path_params"]["agent_id"], scope, receive, state_of(scope))
        await response(scope, receive, send)

    async def handle(self, agent_id: int, scope: Scope, receive: Receive, state: AppState) -> Response:
        """Parse, execute, encode. The headers and the body are read from the ASGI scope and
        channel directly: a Starlette request object would cost more than the route needs."""
        authorization = workspace = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's headers give it
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"x-workspace-id" and workspace is None:
                workspace = value.decode("latin-1")
        principal = await state.auth.authenticate(authorization, workspace)
        body = json_object(await receive_body(receive))
        execution_request, stream, include_usage = parse_request(body)
        service = state.service
        live = await service.start(
            principal, agent_id, execution_request, source="openai", chat_only=True, complete_early=not stream
        )
        scope["state"]["execution"] = live  # for the request's log line and metrics
        completion_id = "chatcmpl-" + next_request_id()[8:]
        created = int(time.time())
        model = live.plan.model
        if not stream:
            result = await unless_disconnected(receive, service.complete(live))
            if result is None:  # the client left; the execution is stored as cancelled
                return Response(status_code=499)
            return json_response(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": result.output, "refusal": None},
                            "logprobs": None,
                            "finish_reason": result.completion.finish_reason,
                        }
                    ],
                    "usage": _usage(result),
                    "agent_response": wire.agent_response(live, result),
                },
            )
        return EventStreamResponse(
            _chunks(live, service.stream(live), completion_id, created, model, include_usage),
            keepalive_s=state.settings.sse_keepalive_s,
            on_early_error=lambda exc: _early_error(scope, exc),
            on_late_error=lambda exc: _late_error(scope, exc),
            keepalive_throughout=live.plan.program is not None,
        )


router = routing.router(tags=["OpenAI-compatible"])


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "opentess"}


async def _agent_models(agent_id: int, request: Request, state: AppState) -> list[str]:
    """The models an agent offers (its `model` question's options, or its default model)."""
    principal = await authenticate(request, state)
    await state.admission.check_request(principal.token_id, principal.workspace_id, principal.limits)
    agent = await state.store.agents.visible(agent_id, principal.workspace_id)
    question = agent.question("model")
    if question is not None and question.options:
        return list(question.options)
    return [
        str(default_of(question)) if question is not None and default_of(question) else state.settings.default_model
    ]


@router.get("/agents/{agent_id:id}/openai/models", response_model=schemas.ModelList, responses=schemas.OPENAI_ERRORS)
async def list_models(agent_id: int, request: Request) -> Response:
    """OpenAI's model list, for clients given a base URL (Open WebUI, LibreChat…): the models the
    agent offers. Any of them may be sent as `model`; anything else runs its default."""
    names = await _agent_models(agent_id, request, app_state(request))
    return json_response(200, {"object": "list", "data": [_model_object(n) for n in names]})


@router.get(
    "/agents/{agent_id:id}/openai/models/{model:path}",
    response_model=schemas.ModelObject,
    responses=schemas.OPENAI_ERRORS,
)
async def get_model(agent_id: int, model: str, request: Request) -> Response:
    if model not in await _agent_models(agent_id, request, app_state(request)):
        raise NotFound(f"The model {model!r} is not offered by this agent", param="model", code="model_not_found")
    return json_response(200, _model_object(model))


def routes() -> list[Route]:
    """The hot route at both prefixes, to be placed first in the router."""
    found = []
    for prefix in ("", "/api"):
        endpoint = ChatCompletions()
        endpoint.route = Route(prefix + PATH, endpoint=endpoint, methods=["POST"])
        found.append(endpoint.route)
    return found


async def _chunks(
    live: LiveExecution,
    events: AsyncIterator[str | StepStarted | ExecutionResult],
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """chat.completion.chunk events. The constant part of every chunk is serialised once; each
    token costs one orjson.dumps of its text."""
    envelope = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
    head = b"data: " + orjson.dumps(envelope)[:-1] + b',"system_fingerprint":null,"choices":[{"index":0,"delta":'
    tail = b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null' if include_usage else b"") + b"}\n\n"
    first = True
    result: ExecutionResult | None = None
    async for item in events:
        if isinstance(item, str):
            if first:
                first = False
                yield head + b'{"role":"assistant","content":' + orjson.dumps(item) + b"}" + tail
            else:
                yield head + b'{"content":' + orjson.dumps(item) + b"}" + tail
        elif isinstance(item, ExecutionResult):
            result = item
        # a toolset's steps are not OpenAI's to see: the stream's keep-alives cover them
    if result is None:  # pragma: no cover - events() always ends with a result or raises
        return
    if first:
        yield head + b'{"role":"assistant","content":""}' + tail
    final: dict[str, Any] = {
        **envelope,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": result.completion.finish_reason}],
        "agent_response": wire.agent_response(live, result),
    }
    if include_usage:
        final["usage"] = None
    yield b"data: " + orjson.dumps(final) + b"\n\n"
    if include_usage:
        usage_chunk = {**envelope, "system_fingerprint": None, "choices": [], "usage": _usage(result)}
        yield b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _early_error(scope: Scope, exc: BaseException) -> Response:
    note_failure(scope, exc)
    if isinstance(exc, OpentessError):
        return render(scope["path"], exc)
    log.error("stream failed before its first chunk", exc_info=exc)
    return render(scope["path"], OpentessError("Internal server error"))


def _late_error(scope: Scope, exc: BaseException) -> bytes:
    note_failure(scope, exc)
    if not isinstance(exc, OpentessError):
        log.error("stream failed after its first chunk", exc_info=exc)
        exc = OpentessError("Internal server error")
    _, body = openai_error(exc)
    return b"data: " + orjson.dumps(body) + b"\n\n"
