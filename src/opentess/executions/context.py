"""Context assembly: what the model is sent, built by an ordered list of sources.

A source is a small class with one method, ``contribute(draft)``: it adds sections to the system
message, turns of history, or the caller's turns, and records on the draft what it added; the
records are stored on the execution (``context``), so every answer can be traced to what the
model saw. The built-in order is conversation, instructions; files (knowledge), memories and
tool results plug in as further sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from opentess.auth import Principal
from opentess.executions.request import ExecutionRequest
from opentess.sandbox import TemplateSandbox
from opentess.store import AgentRecord
from opentess.store.executions import Conversation

SECTION_BREAK = "\n\n"


@dataclass(slots=True)
class ContextDraft:
    """The context of one execution while its sources build it."""

    principal: Principal
    agent: AgentRecord
    request: ExecutionRequest
    values: dict[str, Any]  # the validated custom fields
    model: str
    tools: str
    temperature: float | None
    conversation: Conversation | None = None
    system: list[str] = field(default_factory=list)  # sections of the system message, in order
    history: list[dict[str, str]] = field(default_factory=list)
    turns: list[dict[str, str]] = field(default_factory=list)  # this call's own turns
    contributions: dict[str, Any] = field(default_factory=dict)

    def record(self, source: str, contribution: Any) -> None:
        self.contributions[source] = contribution

    def system_message(self) -> list[dict[str, str]]:
        """The system message the sections make (none when they are all blank)."""
        sections = self.system
        text = sections[0] if len(sections) == 1 else SECTION_BREAK.join(s for s in sections if s.strip())
        return [{"role": "system", "content": text}] if text.strip() else []

    @property
    def input_text(self) -> str:
        """The execution's ``input``: the latest user text (chat) or the rendered prompt (text)."""
        return next((m["content"] for m in reversed(self.turns) if m["role"] == "user"), "")


class ContextSource(Protocol):
    name: str

    async def contribute(self, draft: ContextDraft) -> None: ...


class ConversationSource:
    """The finished turns of the conversation being continued (``root_id``)."""

    name = "conversation"

    async def contribute(self, draft: ContextDraft) -> None:
        conversation = draft.conversation
        if conversation is None:
            return
        draft.history.extend(conversation.history)
        draft.record(
            self.name,
            {
                "root_id": conversation.root_id,
                "executions": conversation.execution_ids,
                "messages": len(conversation.history),
            },
        )


class InstructionsSource:
    """The agent's instructions rendered with the call's values: the system message of a chat
    agent, the prompt itself of a text agent."""

    name = "instructions"

    def __init__(self, sandbox: TemplateSandbox) -> None:
        self.sandbox = sandbox

    async def contribute(self, draft: ContextDraft) -> None:
        values = {**draft.values, "model": draft.model, "tools": draft.tools, "temperature": draft.temperature}
        values["inputs"] = dict(values)  # every field, hyphenated names included: inputs["call-to-action"]
        rendered = await self.sandbox.render(draft.agent.instructions, values)
        if draft.agent.type == "text":
            draft.turns = [{"role": "user", "content": rendered}]
        else:
            draft.system.insert(0, rendered)
            draft.turns = list(draft.request.messages)
        draft.record(self.name, {"chars": len(rendered)})


def default_sources(sandbox: TemplateSandbox) -> list[ContextSource]:
    return [ConversationSource(), InstructionsSource(sandbox)]
