"""The execution service: the one place that runs an agent, for every route that does.

A route parses its wire format into an ``ExecutionRequest`` and calls ``start``, which looks up
the agent (in the caller's workspace), checks its type and state, admits the call (requests per
minute), validates every input against the agent's questions, assembles the model's context
from the ordered context sources, takes a concurrency slot, stores the execution and returns it
live. The route then drives it through this service — ``stream``, ``complete``,
``run_in_background`` and ``wait`` — and encodes what comes back; ``cancel`` stops any
execution, in this process or (over the cancel bus) in another one. Routes parse and encode,
nothing else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from opentess.auth import Principal
from opentess.coordination import CancelBus
from opentess.errors import (
    BadRequest,
    Conflict,
    InvalidInput,
    PayloadTooLarge,
    ServiceUnavailable,
    StillRunning,
)
from opentess.executions.context import ContextDraft, ContextSource, default_sources
from opentess.executions.live import ExecutionPlan, ExecutionResult, LiveExecution, abandon
from opentess.executions.registry import ExecutionRegistry
from opentess.executions.request import ExecutionRequest
from opentess.executions.steps import ProgramFactory, StepStarted
from opentess.limits import Admission
from opentess.providers import ChatRequest, ModelRegistry, Sampling
from opentess.questions import as_number, default_of, match_option, validate_fields
from opentess.sandbox import TemplateSandbox
from opentess.settings import Settings
from opentess.store import AgentRecord, ExecutionRecord, Store
from opentess.store.executions import TERMINAL

DEFAULT_TOOLSET = "no-tools"
CANCEL_WAIT_S = 10.0
# how often a cancel of an execution running in another process looks at the stored status
CANCEL_POLL_S = 0.05


class ExecutionService:
    def __init__(
        self,
        store: Store,
        models: ModelRegistry,
        settings: Settings,
        instance_id: str,
        admission: Admission,
        sandbox: TemplateSandbox,
        cancel_bus: CancelBus | None = None,
        sources: list[ContextSource] | None = None,
    ) -> None:
        self.store = store
        self.models = models
        self.settings = settings
        self.instance_id = instance_id
        self.admission = admission
        self.sandbox = sandbox
        self.cancel_bus = cancel_bus or CancelBus()
        self.sources = sources if sources is not None else default_sources(sandbox)
        self.registry = ExecutionRegistry()
        # called with each run once its end is stored (capabilities: webhook deliveries)
        self.end_hooks: list[Callable[[LiveExecution], Awaitable[None] | None]] = []
        # chooses what drives a run from its toolset (opentess.toolsets); None: one model call
        self.programs: ProgramFactory | None = None

    # starting ---------------------------------------------------------------------------------

    async def start(
        self,
        principal: Principal,
        agent_id: int,
        request: ExecutionRequest,
        *,
        source: str,
        chat_only: bool = False,
        background: bool = False,
        complete_early: bool = False,
    ) -> LiveExecution:
        """Admit, validate, assemble and store one execution; returns it live (registered, so
        that it can be cancelled by id). Nothing is stored, and no model called, for a call that
        fails any check.

        ``background``: stored ``starting``, to be driven by ``run_in_background``.
        ``complete_early`` (an execution that ``complete`` will finish) sends the model its
        request once the concurrency slot is taken, while the execution is being stored: the
        two waits overlap instead of adding up (a durable insert on PostgreSQL is ~0.5 ms). If
        storing fails, the model call is cancelled and the caller gets the storage error."""
        await self.admission.check_request(principal.token_id, principal.workspace_id, principal.limits)
        agent = await self.store.agents.get_recent(agent_id, principal.workspace_id)
        if chat_only and agent.type != "chat":
            raise BadRequest(
                f"Agent {agent.id} is a {agent.type} agent; this endpoint serves chat agents only "
                "(use POST /agents/{id}/execute)."
            )
        if not agent.active:
            raise Conflict(f"Agent {agent.id} is inactive; activate it to run it.")
        draft = await self._validate(principal, agent, request)
        for context_source in self.sources:
            await context_source.contribute(draft)
        system = draft.system_message()
        self._check_total(system, draft)
        plan = self._plan(agent, draft, system)
        status = "starting" if background else "running"
        held = await self.admission.start_run(principal.token_id, principal.workspace_id, principal.limits)
        early = None
        began = time.perf_counter()
        if complete_early and plan.program is None:
            early = asyncio.ensure_future(plan.provider.complete(plan.request))
        try:
            execution_id, created_at = await self._create(principal, plan, draft, system, source, status)
        except BaseException:
            if early is not None:
                abandon(early)
            await self.admission.end_run(held)
            raise
        live = LiveExecution(self.store, plan, execution_id, created_at, status, timeout_s=self.settings.run_timeout_s)
        if early is not None:
            live.complete_with(early, began)
        if held is not None:
            live.on_end(lambda _: self.admission.end_run(held))
        for hook in self.end_hooks:
            live.on_end(hook)
        return self.registry.add(live)

    async def _validate(self, principal: Principal, agent: AgentRecord, request: ExecutionRequest) -> ContextDraft:
        """Every input against the agent, all problems reported together (InvalidInput)."""
        errors = dict(request.errors)
        if agent.type != "chat":
            # text agents take no messages: whatever the route found wrong with them is moot
            errors = {k: v for k, v in errors.items() if not k.startswith("messages")}
        self._check_size(request)
        conversation = None
        if request.root_id is not None:
            conversation = await self.store.executions.conversation(request.root_id, agent.id, principal.workspace_id)
            if conversation.running_id is not None:
                raise Conflict(
                    f"Execution {conversation.running_id} of this conversation has not ended yet; "
                    "continue the conversation once it has.",
                    param="root_id",
                )
        values, field_errors = validate_fields(
            agent.questions, request.fields, conversation.fields if conversation else None
        )
        errors.update(field_errors)
        model = self._model(agent, request.model, request.lenient_model, errors)
        temperature = self._temperature(agent, request.temperature, errors)
        tools = self._tools(agent, request.tools, errors)
        if "tools" not in errors and self.programs is not None:
            problems = self.programs.problems(tools, model)
            if problems:
                errors["tools"] = problems
        if errors:
            raise InvalidInput(errors)
        return ContextDraft(
            principal=principal,
            agent=agent,
            request=request,
            values=values,
            model=model,
            tools=tools,
            temperature=temperature,
            conversation=conversation,
        )

    def _plan(self, agent: AgentRecord, draft: ContextDraft, system: list[dict[str, str]]) -> ExecutionPlan:
        model_config = self.models.config(draft.model)
        asked = draft.request.sampling
        # the caller's, else the agent's, else the model's default (the local provider also stops
        # where its context is full)
        max_tokens = next(
            (n for n in (asked.max_tokens, agent.max_tokens, model_config.max_tokens) if n is not None), None
        )
        sampling = Sampling(
            temperature=draft.temperature,
            max_tokens=max_tokens,
            top_p=asked.top_p,
            stop=asked.stop,
            seed=asked.seed,
            presence_penalty=asked.presence_penalty,
            frequency_penalty=asked.frequency_penalty,
        )
        return ExecutionPlan(
            agent_id=agent.id,
            model=draft.model,
            model_config=model_config,
            provider=self.models.get(draft.model),
            request=ChatRequest(messages=system + draft.history + draft.turns, sampling=sampling),
            input_text=draft.input_text,
            root_id=draft.conversation.root_id if draft.conversation else None,
            program=self.programs.program(draft) if self.programs is not None else None,
        )

    def _check_size(self, request: ExecutionRequest) -> None:
        limit = self.settings.max_messages
        if len(request.messages) > limit:
            raise InvalidInput(
                {"messages": [f"At most {limit} messages are accepted; {len(request.messages)} were sent."]}
            )
        chars = _chars(request.messages)
        if chars > self.settings.max_input_chars:
            raise PayloadTooLarge(
                f"The messages hold {chars} characters; the limit is {self.settings.max_input_chars}.",
                param="messages",
            )

    def _check_total(self, system_message: list[dict[str, str]], draft: ContextDraft) -> None:
        """Everything sent to the model counts against ``max_input_chars``: a conversation that
        has grown past it is refused (start a new one), never silently cut."""
        system = _chars(system_message)
        past = _chars(draft.history) if draft.history else 0
        new = _chars(draft.turns)
        limit = self.settings.max_input_chars
        if system + past + new > limit:
            raise PayloadTooLarge(
                f"This execution would send the model {system + past + new} characters (instructions {system}, "
                f"conversation history {past}, new messages {new}); the limit is {limit}. "
                "Start a new conversation or send less.",
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
        if asked is None or asked == "":
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

    async def _create(
        self,
        principal: Principal,
        plan: ExecutionPlan,
        draft: ContextDraft,
        system: list[dict[str, str]],
        source: str,
        status: str,
    ) -> tuple[int, datetime]:
        params: dict[str, Any] = {"temperature": draft.temperature, "tools": draft.tools, "fields": draft.values}
        params.update({k: v for k, v in plan.request.sampling.given().items() if k != "temperature"})
        return await self.store.executions.create(
            workspace_id=principal.workspace_id,
            agent_id=plan.agent_id,
            user_id=principal.user_id,
            token_id=principal.api_token_id,  # None for a run started in the console
            root_id=plan.root_id,
            source=source,
            input=plan.input_text,
            model=plan.model,
            turns=draft.turns,
            # the history is the earlier executions' own turns: it is not copied again (a
            # conversation's storage would grow with the square of its length)
            messages=system + draft.turns,
            params=params,
            context=draft.contributions,
            status=status,
            instance_id=self.instance_id,
        )

    # driving ----------------------------------------------------------------------------------

    @staticmethod
    def stream(live: LiveExecution) -> AsyncIterator[str | StepStarted | ExecutionResult]:
        """Text deltas as the model produces them (and the steps of a toolset's run as they
        begin), then the stored result."""
        return live.events()

    @staticmethod
    async def complete(live: LiveExecution) -> ExecutionResult:
        """The whole answer, once stored."""
        return await live.complete()

    def run_in_background(self, live: LiveExecution) -> asyncio.Task[ExecutionResult | None]:
        """Drive the execution in a task of the server, independent of the request."""
        return self.registry.spawn(live.drain())

    async def wait(self, task: asyncio.Task[Any], limit_s: float) -> None:
        """Wait for a background execution to end, at most ``limit_s``; it goes on afterwards."""
        await asyncio.wait({task}, timeout=limit_s)

    async def cancel(self, principal: Principal, execution_id: int) -> ExecutionRecord:
        """Stop an execution of the caller's workspace, wherever it runs; returns it as stored
        once its end is stored. Conflict when it has already ended; ServiceUnavailable when it
        stopped but its end could not be stored yet; StillRunning when it did not stop in time."""
        executions = self.store.executions
        record = await executions.get(execution_id, principal.workspace_id)
        if record.status in TERMINAL:
            raise Conflict(f"The agent response has already finished ({record.status}).")
        if executions.unstored(execution_id):
            raise _end_not_stored()
        live = self.registry.get(execution_id)
        if live is not None:
            if live.cancel():
                try:
                    await asyncio.wait_for(live.ended.wait(), timeout=CANCEL_WAIT_S)
                except TimeoutError:
                    pass  # answered below with whatever is stored now
        elif self.cancel_bus.shared:
            # another process runs it: ask every process, then watch the stored status
            await self.cancel_bus.publish(execution_id)
            loop = asyncio.get_running_loop()
            give_up = loop.time() + CANCEL_WAIT_S
            while loop.time() < give_up:
                if (await executions.get(execution_id)).status in TERMINAL:
                    break
                await asyncio.sleep(CANCEL_POLL_S)
        else:
            raise Conflict(
                "This agent response is not running in this server process "
                "(set OPENTESS_REDIS_URL to cancel across processes)."
            )
        stored = await executions.get(execution_id, principal.workspace_id)
        if stored.status not in TERMINAL:
            if executions.unstored(execution_id):
                raise _end_not_stored()
            raise StillRunning(
                f"The agent response did not stop within {CANCEL_WAIT_S:g} s; it is still {stored.status}."
            )
        return stored

    async def shutdown(self) -> None:
        await self.registry.shutdown()


def _chars(messages: list[dict[str, str]]) -> int:
    """The characters of the messages' contents (a list, not a generator: this runs on every
    call, and a generator is resumed once per message)."""
    return sum([len(m["content"]) for m in messages])


def _end_not_stored() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The agent response has stopped, but its end could not be stored yet (the database is unavailable); "
        "the server stores it as soon as it can."
    )
