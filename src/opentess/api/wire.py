"""Wire objects: one builder each, from the stored records to the shapes the API answers with
(documented by the per-operation schemas of opentess.api.schemas; a test checks that every
builder's output validates against its schema). Records never render themselves."""

from __future__ import annotations

from typing import Any

from opentess.api import files_wire
from opentess.clock import laravel
from opentess.executions.live import ExecutionResult, LiveExecution
from opentess.memories import wire as memories_wire
from opentess.questions import Question
from opentess.store import AgentRecord, ExecutionRecord, TokenRecord


def execution(record: ExecutionRecord) -> dict[str, Any]:
    """The Tess execution object ("agent response", contract §4, §5)."""
    return {
        "id": record.id,
        "status": record.status,
        "input": record.input,
        "output": record.output,
        "error": record.error,
        "credits": record.credits,
        "root_id": record.root_id,
        "created_at": laravel(record.created_at),
        "updated_at": laravel(record.updated_at),
        "template_id": record.agent_id,
        "memories": memories_wire.used(record.context),  # what the context took from memories
        "knowledge": files_wire.knowledge(record.context),  # the files and chunks the context used
        "sources": record.sources or [],  # what a toolset found, numbered as the answer cites them
        "steps": record.steps or [],  # what a toolset did: searches, pages read, tool calls
    }


def toolset_fields(live: LiveExecution) -> dict[str, Any]:
    """``sources`` and ``steps`` of a run, as far as it has gone."""
    record = live.record
    if record is None:
        return {"sources": [], "steps": []}
    return {"sources": list(record.sources), "steps": [s.stored() for s in record.steps]}


def live_execution(live: LiveExecution) -> dict[str, Any]:
    """The execution object of one that has just been stored (no read back needed)."""
    created = laravel(live.created_at)
    return {
        "id": live.id,
        "status": live.status,
        "input": live.plan.input_text,
        "output": None,
        "error": None,
        "credits": None,
        "root_id": live.root_id,
        "created_at": created,
        "updated_at": created,
        "template_id": live.plan.agent_id,
        "sources": [],
        "steps": [],
    }


def agent_response(live: LiveExecution, result: ExecutionResult | None) -> dict[str, Any]:
    """The ``agent_response`` object the OpenAI-compatible route adds to its answers."""
    return {
        "id": live.id,
        "root_id": live.root_id,
        "status": result.status if result else live.status,
        "credits": result.credits if result else None,
        "sources": live.record.sources if live.record is not None else [],
    }


# what a chat agent's questions list besides the stored ones, as Tess does: they describe the
# request (Langflow shows its message box only when a `messages` question exists)
CHAT_QUESTIONS = (
    {
        "type": "array",
        "name": "messages",
        "description": "The conversation: user and assistant messages, ending with the user's",
        "required": True,
    },
    {
        "type": "number",
        "name": "root_id",
        "description": "Continue the conversation of this execution",
        "required": False,
    },
)
_STEERING = ("temperature", "model", "tools")


def _question(q: Question) -> dict[str, Any]:
    out = q.model_dump(exclude_none=True)
    # a client that pre-selects a required select's first option (Langflow) must get the default
    default = out.get("default")
    options = out.get("options")
    if q.name in _STEERING and options and default is not None and str(default) in options:
        out["options"] = [str(default), *(o for o in options if o != str(default))]
    return out


def agent(record: AgentRecord) -> dict[str, Any]:
    """The agent object of the Tess API (contract §2): no instructions."""
    questions = [_question(q) for q in record.questions]
    if record.type == "chat":
        stored = {q["name"] for q in questions}
        questions = [dict(q) for q in CHAT_QUESTIONS if q["name"] not in stored] + questions
    return {
        "id": record.id,
        "title": record.title,
        "description": record.description,
        "long_description": record.long_description,
        "workspace_id": record.workspace_id,
        "visibility": record.visibility,
        "slug": record.slug,
        "active": record.active,
        "type": record.type,
        "questions": questions,
        "created_at": laravel(record.created_at),
        "updated_at": laravel(record.updated_at),
    }


def managed_agent(record: AgentRecord) -> dict[str, Any]:
    """The agent as saved (its questions as stored, and its instructions template): what the
    management API and the CLI show and take back."""
    return {
        **agent(record),
        "questions": [q.model_dump(exclude_none=True) for q in record.questions],
        "instructions": record.instructions,
        "max_tokens": record.max_tokens,
    }


def token(record: TokenRecord) -> dict[str, Any]:
    """An API token as the API and the CLI show it: never its secret or hash."""
    return {
        "id": record.id,
        "name": record.name,
        "user": record.user_email,
        "prefix": record.prefix,
        "created_at": laravel(record.created_at),
        "expires_at": laravel(record.expires_at),
        "revoked_at": laravel(record.revoked_at),
        "last_used_at": laravel(record.last_used_at),
        "rpm_limit": record.rpm_limit,
        "concurrency_limit": record.concurrency_limit,
        "parent_id": record.parent_id,
    }
