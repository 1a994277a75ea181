"""Per-operation schemas: what each route accepts and answers, for the OpenAPI document (and
/docs). Routes answer with the dicts of opentess.api.wire; ``tests/test_openapi.py`` checks
that those builders' output validates against these models, and a schema-driven fuzz test
(schemathesis) checks every live answer against the document.

Two routes parse their bodies by hand (Tess's and OpenAI's free-form bodies, where every
rejection names its field): their request schemas are published here with
``documented_body`` and merged into the document by ``install_openapi``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from opentess.agents import AgentSpec
from opentess.api.files_schemas import KnowledgeUsed
from opentess.api.memory_schemas import MemoriesUsed
from opentess.questions import Question, QuestionType

CHAT_PATH = "/agents/{agent_id:id}/openai/chat/completions"  # the hot route (opentess.api.openai)
Timestamp = str  # Laravel form, e.g. 2025-01-05T19:35:21.000000Z
PageQuery = Annotated[str | None, Query(description="Page number, from 1")]
PerPageQuery = Annotated[str | None, Query(description="Items per page, 1-100 (default 15)")]

# errors -----------------------------------------------------------------------------------------


class NativeError(BaseModel):
    message: str = Field(description="What went wrong, for a person")
    error: str = Field(description="Short name of the error")


class ValidationFailed(NativeError):
    errors: dict[str, list[str]] = Field(description="Laravel's map: each invalid field and its problems")


class RateLimitedError(NativeError):
    retry_after: int = Field(description="Seconds to wait (also in the Retry-After header)")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError, "description": "OpenAI's error object"} for status in (401, 403, 404, 422, 429, 500)
}


class ModelObject(BaseModel):
    """OpenAI's model object."""

    id: str
    object: str
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str
    data: list[ModelObject]


def native_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a native route: every status it can give, in the Tess shape."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({401, 403, 413, 422, 429, 500, *statuses}):
        model: type[BaseModel] = NativeError
        if status == 422:
            model = ValidationFailed
        elif status == 429:
            model = RateLimitedError
        out[status] = {"model": model, "description": _DESCRIPTIONS.get(status, "Error")}
    return out


_DESCRIPTIONS = {
    400: "The body is not a JSON object, or cannot be served as asked",
    401: "Missing, unknown, revoked or expired API token",
    403: "Not allowed (x-workspace-id names another workspace; a token may not do this)",
    404: "Not found (also: it belongs to another workspace)",
    409: "The resource's state forbids it",
    413: "The body, or what would be sent to the model, is too large",
    422: "Invalid fields, each named in `errors`",
    429: "A rate limit is full",
    500: "Unexpected error",
    502: "The model backend failed",
    503: "Temporarily unavailable",
    504: "Timed out",
}

# agents -------------------------------------------------------------------------------------------


class QuestionOut(BaseModel):
    type: QuestionType
    name: str
    description: str
    required: bool
    options: list[str] | None = None
    default: Any = None
    placeholder: str | None = None
    min: float | None = None
    max: float | None = None
    max_length: int | None = None


class Agent(BaseModel):
    """The agent object of the Tess API."""

    id: int
    title: str
    description: str
    long_description: str
    workspace_id: int
    visibility: Literal["private", "workspace", "public"]
    slug: str
    active: int = Field(description="1 or 0")
    type: Literal["chat", "text"]
    questions: list[QuestionOut]
    created_at: Timestamp
    updated_at: Timestamp


class ManagedAgent(Agent):
    """The agent with its instructions template (management routes)."""

    instructions: str
    max_tokens: int | None


class AgentCreate(AgentSpec):
    """A new agent: the JSON form of the YAML format (README, "Agents")."""


class AgentUpdate(BaseModel):
    """Any fields of the agent; merged into its definition, which is validated as a whole."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=200)
    type: Literal["chat", "text"] | None = None
    description: str | None = None
    long_description: str | None = None
    visibility: Literal["private", "workspace", "public"] | None = None
    slug: str | None = None
    active: bool | None = None
    instructions: str | None = None
    questions: list[Question] | None = None
    max_tokens: int | None = Field(default=None, ge=1)


class PageLink(BaseModel):
    url: str | None
    label: str
    active: bool


class Page(BaseModel):
    """Laravel's page envelope."""

    current_page: int
    first_page_url: str
    from_: int | None = Field(alias="from")
    last_page: int
    last_page_url: str
    links: list[PageLink]
    next_page_url: str | None
    path: str
    per_page: int
    prev_page_url: str | None
    to: int | None
    total: int


class AgentPage(Page):
    data: list[Agent]


# executions ---------------------------------------------------------------------------------------


class Source(BaseModel):
    """A source a toolset put before the model; the answer cites it as ``[index]``."""

    index: int
    title: str
    url: str
    snippet: str


class Step(BaseModel):
    """One operation of a toolset's run (a search, a page read, a tool call)."""

    index: int
    tool: str
    arguments: dict[str, Any]
    duration_ms: float | None
    result_chars: int | None
    error: str | None


class Execution(BaseModel):
    """An execution ("agent response")."""

    id: int
    status: Literal["starting", "running", "succeeded", "failed", "cancelled"]
    input: str
    output: str | None
    error: str | None
    credits: float | None
    root_id: int
    created_at: Timestamp
    updated_at: Timestamp
    template_id: int = Field(description="The agent's id")
    memories: MemoriesUsed | None = Field(default=None, description="What the context took from memory collections")
    knowledge: KnowledgeUsed | None = Field(default=None, description="The files and chunks the context used")
    sources: list[Source] = Field(default_factory=list, description="What a search toolset found, numbered as cited")
    steps: list[Step] = Field(default_factory=list, description="What the toolset did: searches, pages, tool calls")


class ExecutionPage(Page):
    data: list[Execution]


class ExecuteResponse(BaseModel):
    template_id: str = Field(description="The agent's id, as a string")
    responses: list[Execution]


class ChatMessage(BaseModel):
    role: Literal["developer", "user", "assistant"]
    content: str | list[dict[str, Any]]


class ExecuteRequest(BaseModel):
    """The body of POST /agents/{id}/execute. The agent's custom fields go at its root (the
    agent's `questions` name them); anything not named here is a custom field."""

    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] | str | None = Field(
        default=None,
        description="Chat agents: an optional first developer message, then user/assistant turns ending with user",
    )
    temperature: float | str | None = None
    model: str | None = None
    tools: str | None = Field(default=None, description="A toolset name, e.g. no-tools")
    root_id: int | str | None = Field(default=None, description="Continue this conversation")
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    file_ids: list[int] | None = Field(default=None, description="Files for this call (and the conversation's next)")
    memory_collections: list[int] | None = Field(default=None, description="Memory collections to draw from")
    stream: bool | str | None = None
    waitExecution: bool | str | None = Field(default=None, description="Also accepted in the query string")
    wait_execution: bool | str | None = None


# the OpenAI-compatible route -----------------------------------------------------------------------


class ChatCompletionRequest(BaseModel):
    """OpenAI's Chat Completions request, as this endpoint accepts it. The agent's custom
    fields go at the root of the body; unsupported OpenAI parameters are refused (400)."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(description="system/developer/user/assistant messages; the last is user")
    model: str | None = Field(default=None, description="One of the agent's model options; anything else: its default")
    temperature: float | str | None = None
    tools: str | None = Field(default=None, description="A toolset name (not OpenAI tool definitions)")
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    root_id: int | str | None = Field(default=None, description="Continue this conversation")
    file_ids: list[int] | None = Field(default=None, description="Files for this call (and the conversation's next)")
    memory_collections: list[int] | None = Field(default=None, description="Memory collections to draw from")


class AgentResponseRef(BaseModel):
    id: int
    root_id: int
    status: str
    credits: float | None
    sources: list[Source] = Field(default_factory=list, description="What a search toolset found, cited as [n]")


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    refusal: None = None


class ChatCompletionChoice(BaseModel):
    index: int
    message: ChatCompletionMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """OpenAI's chat.completion object, plus `agent_response` (ignored by OpenAI clients)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChatCompletionChoice]
    usage: Usage
    agent_response: AgentResponseRef


# tokens ---------------------------------------------------------------------------------------------


class Token(BaseModel):
    id: int
    name: str
    user: str
    prefix: str
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None
    rpm_limit: int | None
    concurrency_limit: int | None
    parent_id: int | None = Field(description="The token that created this one (null: the operator)")


class TokenWithSecret(Token):
    token: str = Field(description="The secret: shown in this answer only")


class TokenList(BaseModel):
    data: list[Token]


# health -----------------------------------------------------------------------------------------------


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    migration: str | None = None
    expected: str | None = None


# the document -----------------------------------------------------------------------------------------

_BODIES: dict[str, type[BaseModel]] = {}


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses its body by hand: the body's schema is
    ``model`` (added to the document's components by ``install_openapi``)."""
    _BODIES[model.__name__] = model
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def install_openapi(app: FastAPI) -> None:
    """FastAPI's document, plus the bearer scheme on every operation, the hand-parsed bodies'
    schemas, and the OpenAI-compatible route (a plain Starlette route FastAPI does not see)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        published: list[type[BaseModel]] = [*_BODIES.values(), ChatCompletionRequest, ChatCompletion, OpenAIError]
        for model in published:
            _add_schema(schemas, model)
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API token, `ot_…`"}
        }
        public = {"/healthz", "/readyz", "/metrics"}
        for path, item in doc["paths"].items():
            for operation in item.values():
                if path not in public:
                    operation["security"] = [{"bearer": []}]
        for prefix in ("", "/api"):
            doc["paths"][prefix + CHAT_PATH.replace(":id", "")] = _chat_path(prefix)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _add_schema(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas[model.__name__] = schema


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _chat_path(prefix: str) -> dict[str, Any]:
    errors = {
        str(status): {
            "description": _DESCRIPTIONS[status],
            "content": {"application/json": {"schema": _ref("OpenAIError")}},
        }
        for status in (400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 504)
    }
    return {
        "post": {
            "tags": ["OpenAI-compatible"],
            "summary": "Chat Completions for one agent",
            "description": (
                "OpenAI's Chat Completions API; point an OpenAI SDK at `<server>/agents/{id}/openai`. "
                "With `stream: true` the answer is `text/event-stream`: `chat.completion.chunk` events, "
                "then `data: [DONE]`."
            ),
            "operationId": f"chat_completions{prefix.replace('/', '_')}",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "agent_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}},
            },
            "responses": {
                "200": {
                    "description": "The completion (or, streaming, its events)",
                    "content": {
                        "application/json": {"schema": _ref("ChatCompletion")},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **errors,
            },
        }
    }
