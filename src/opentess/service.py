"""The execution pipeline, shared by every route that runs an agent.

A route parses its wire format into a ``RunInput``; ``ExecutionService.prepare`` validates it
against the agent (questions, model, temperature, tools), renders the instructions and loads the
conversation; ``start`` stores the execution; ``Run.events`` streams the model and stores the end.
Routes differ only in how they parse input and encode output."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentess.auth import Principal
from opentess.errors import Conflict, InvalidInput, PayloadTooLarge
from opentess.limits import Admission
from opentess.providers import ChatRequest, ModelRegistry, Provider, Sampling
from opentess.questions import as_number, default_of, match_option, validate_fields
from opentess.runs import Run, RunRegistry, abandon
from opentess.sandbox import TemplateSandbox
from opentess.settings import ModelConfig, Settings
from opentess.store import AgentRecord, Store

DEFAULT_TOOLSET = "no-tools"


@dataclass(slots=True)
class RunInput:
    """What a caller asked for, already in neutral form (roles normalised, content as text)."""

    messages: list[dict[str, str]]
    fields: dict[str, Any]  # the body: custom fields at its root, `answers` merged under them
    temperature: Any = None
    model: Any = None
    tools: Any = None
    root_id: int | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclass(slots=True)
class RunPlan:
    agent: AgentRecord
    model: str
    model_config: ModelConfig
    provider: Provider
    request: ChatRequest
    stored_messages: list[dict[str, str]]  # what is stored: the request without the history
    turns: list[dict[str, str]]
    input_text: str
    root_id: int | None
    params: dict[str, Any]


class ExecutionService:
    def __init__(
        self,
        store: Store,
        models: ModelRegistry,
        settings: Settings,
        instance_id: str,
        admission: Admission,
        sandbox: TemplateSandbox,
    ) -> None:
        self.sandbox = sandbox
        self.instance_id = instance_id
        self.admission = admission
        self.store = store
        self.models = models
        self.settings = settings
        self.runs = RunRegistry()

    async def prepare(
        self,
        principal: Principal,
        agent: AgentRecord,
        run: RunInput,
        *,
        lenient_model: bool,
        errors: dict[str, list[str]] | None = None,
    ) -> RunPlan:
        """Validate everything before any model is called; InvalidInput names every bad field,
        those the route found itself (``errors``) included.

        ``lenient_model``: an unknown model falls back to the agent's default (the OpenAI route,
        whose SDKs always send some model name) instead of failing."""
        if not agent.active:
            raise Conflict(f"Agent {agent.id} is inactive; activate it to run it.")
        errors = dict(errors or {})
        self._check_size(run)
        values, field_errors = validate_fields(agent.questions, run.fields)
        errors.update(field_errors)
        model = self._model(agent, run.model, lenient_model, errors)
        temperature = self._temperature(agent, run.temperature, errors)
        tools = self._tools(agent, run.tools, errors)
        if errors:
            raise InvalidInput(errors)

        rendered = await self.sandbox.render(
            agent.instructions, {**values, "model": model, "tools": tools, "temperature": temperature}
        )
        root_id = None
        history: list[dict[str, str]] = []
        history_ids: list[int] = []
        if run.root_id is not None:
            conversation = await self.store.executions.conversation(run.root_id, agent.id, principal.workspace_id)
            if conversation.running_id is not None:
                raise Conflict(
                    f"Execution {conversation.running_id} of this conversation has not ended yet; "
                    "continue the conversation once it has.",
                    param="root_id",
                )
            root_id, history, history_ids = conversation.root_id, conversation.history, conversation.execution_ids
        if agent.type == "text":
            turns = [{"role": "user", "content": rendered}]
            system: list[dict[str, str]] = []
            input_text = rendered
        else:
            turns = run.messages
            system = [{"role": "system", "content": rendered}] if rendered.strip() else []
            input_text = next((m["content"] for m in reversed(turns) if m["role"] == "user"), "")
        messages = system + history + turns
        self._check_total(messages, rendered if system else "", history)
        sampling = Sampling(
            temperature=temperature,
            max_tokens=run.max_tokens,
            top_p=run.top_p,
            stop=tuple(run.stop),
            seed=run.seed,
            presence_penalty=run.presence_penalty,
            frequency_penalty=run.frequency_penalty,
        )
        request = ChatRequest(messages=messages, sampling=sampling)
        params: dict[str, Any] = {"temperature": temperature, "tools": tools, "fields": values}
        if history_ids:
            # the history itself is the earlier executions' turns: storing it again with every
            # turn would make a conversation's storage grow with the square of its length
            params["history"] = history_ids
        params.update({k: v for k, v in sampling.given().items() if k != "temperature"})
        return RunPlan(
            agent=agent,
            model=model,
            model_config=self.models.config(model),
            provider=self.models.get(model),
            request=request,
            stored_messages=system + turns,
            turns=turns,
            input_text=input_text,
            root_id=root_id,
            params=params,
        )

    def _check_size(self, run: RunInput) -> None:
        limit = self.settings.max_messages
        if len(run.messages) > limit:
            raise InvalidInput({"messages": [f"At most {limit} messages are accepted; {len(run.messages)} were sent."]})
        chars = 0
        for m in run.messages:
            chars += len(m["content"])
        if chars > self.settings.max_input_chars:
            raise PayloadTooLarge(
                f"The messages hold {chars} characters; the limit is {self.settings.max_input_chars}.",
                param="messages",
            )

    def _check_total(self, messages: list[dict[str, str]], instructions: str, history: list[dict[str, str]]) -> None:
        """Everything sent to the model counts against ``max_input_chars``: a conversation that
        has grown past it is refused (start a new one), never silently cut."""
        total = sum(len(m["content"]) for m in messages)
        limit = self.settings.max_input_chars
        if total > limit:
            past = sum(len(m["content"]) for m in history)
            raise PayloadTooLarge(
                f"This execution would send the model {total} characters (instructions {len(instructions)}, "
                f"conversation history {past}, new messages {total - past - len(instructions)}); the limit is "
                f"{limit}. Start a new conversation or send less.",
                param="root_id" if past else "messages",
            )

    def _model(self, agent: AgentRecord, asked: Any, lenient: bool, errors: dict[str, list[str]]) -> str:
        q = agent.question("model")
        default = str(default_of(q)) if q is not None and default_of(q) is not None else self.settings.default_model
        if asked is None or asked == "":
            return default
        options = q.options if q is not None and q.options else [default]
        if isinstance(asked, str) and asked in options:
            return asked
        if not lenient:
            errors["model"] = [f"The selected model is invalid. Valid options: {', '.join(options)}."]
        return default

    @staticmethod
    def _temperature(agent: AgentRecord, asked: Any, errors: dict[str, list[str]]) -> float | None:
        q = agent.question("temperature")
        if asked is None:
            default = default_of(q) if q is not None else None
            return as_number(default) if default is not None else None
        value = as_number(asked)
        if q is not None and q.options:
            option = match_option(asked, q.options) if value is not None else None
            if option is None:
                errors["temperature"] = [f"The temperature must be one of: {', '.join(q.options)}."]
                return None
            return float(option)
        if value is None or not 0 <= value <= 2:
            errors["temperature"] = ["The temperature must be a number between 0 and 2."]
            return None
        return value

    @staticmethod
    def _tools(agent: AgentRecord, asked: Any, errors: dict[str, list[str]]) -> str:
        q = agent.question("tools")
        default = str(default_of(q)) if q is not None and default_of(q) is not None else DEFAULT_TOOLSET
        if asked is None or asked == "":
            return default
        if not isinstance(asked, str):
            errors["tools"] = [
                'The tools field must be a string naming a toolset (for example "no-tools"); '
                "OpenAI-style tool definitions are not supported."
            ]
            return default
        options = q.options if q is not None and q.options else [default]
        if asked not in options:
            errors["tools"] = [f"The selected tools is invalid. Valid options: {', '.join(options)}."]
        return asked

    async def start(
        self, principal: Principal, plan: RunPlan, source: str, status: str = "running", *, complete_early: bool = False
    ) -> Run:
        """Take a concurrency slot, store the execution and return the run that will fill it in
        (registered, so that it can be cancelled by id). RateLimited when no slot is free.

        ``complete_early`` (a run that ``complete()`` will finish) sends the model its request
        once the slot is taken, while the execution is being stored: the two waits overlap instead
        of adding up (on PostgreSQL a durable insert is ~0.5 ms). If storing fails, the model call
        is cancelled and the caller gets the storage error, as without it."""
        admission = self.admission
        held = await admission.start_run(principal.token_id, principal.workspace_id, principal.limits)
        early = None
        began = time.perf_counter()
        if complete_early:
            early = asyncio.ensure_future(plan.provider.complete(plan.request))
        try:
            execution_id, created_at = await self._create(principal, plan, source, status)
        except BaseException:
            if early is not None:
                abandon(early)
            await admission.end_run(held)
            raise
        run = Run(self.store, plan, execution_id, created_at, status, timeout_s=self.settings.run_timeout_s)
        if early is not None:
            run.complete_with(early, began)
        if held is not None:
            run.on_end(lambda _: admission.end_run(held))
        return self.runs.add(run)

    async def _create(self, principal: Principal, plan: RunPlan, source: str, status: str) -> tuple[int, datetime]:
        return await self.store.executions.create(
            workspace_id=principal.workspace_id,
            agent_id=plan.agent.id,
            user_id=principal.user_id,
            token_id=principal.token_id,
            root_id=plan.root_id,
            source=source,
            input=plan.input_text,
            model=plan.model,
            turns=plan.turns,
            messages=plan.stored_messages,
            params=plan.params,
            status=status,
            instance_id=self.instance_id,
        )
