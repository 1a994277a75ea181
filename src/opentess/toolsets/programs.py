"""What an execution does for each toolset mode (the ``Program`` seam of opentess.executions).

- ``GroundedProgram`` (``internet``, ``wikipedia``, the site-restricted toolsets; any model): a
  query from the latest user message (rewritten by the model first when it calls tools), a
  search, the top results' pages read concurrently, their main text put into the system message
  as numbered sources, then one model call. A search or a page that fails is recorded as the
  step's error and left out; the answer goes on.
- ``AgentProgram`` (``agent``; models with ``supports_tools``): OpenAI function calling in a loop,
  bounded in steps, time and tokens; when a bound is reached the model is asked for its final
  answer without tools.

Both run inside the stored execution (cancel, time limit and disconnects apply), record each
step and source on it, and add the toolset's prices to its credits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from opentess.executions.context import ContextDraft
from opentess.executions.live import ExecutionPlan
from opentess.executions.steps import Program, RunRecord, Step, StepStarted
from opentess.providers import ChatRequest, Completion, ModelRegistry, Sampling, ToolCall, ToolSpec
from opentess.settings import Settings
from opentess.toolsets.registry import Toolset, catalog
from opentess.toolsets.search import SearchError, SearchResult
from opentess.toolsets.tools import QUERY, ToolCallContext, ToolFailed, Toolkit, ToolOutput, _object
from opentess.toolsets.web import FetchFailed, FetchRefused

log = logging.getLogger("opentess.toolsets")

MAX_SOURCES_CHARS = 12_000  # of all the sources' text in one grounded context
MIN_SOURCE_CHARS = 300  # a page gets at least this much, or is given by its snippet only
CHARS_PER_TOKEN = 3  # a cautious estimate: the sources must fit a small model's context
REWRITE_HISTORY = 6  # messages of the conversation the query rewrite sees
GROUNDED_HEADER = (
    "## Sources\n"
    "Search results{for_query}, read for you. Answer from them when they are relevant and cite each "
    "one you use by its number in brackets, e.g. [1]. If they do not answer the question, say so."
)
AGENT_NOTE = (
    "You can call tools to look things up and to compute. Call them when the answer needs them; "
    "cite what a tool found by its number in brackets, e.g. [1]. Answer the user in your own words "
    "once you have what you need."
)
FINAL_NOTE = "No more tool calls are possible in this answer: answer now with what you have."
SEARCH_FUNCTION = ToolSpec(
    "search", "Search for what the user's latest message needs.", _object({"query": QUERY}, ["query"])
)
REWRITE_NOTE = (
    "Write the search query that finds what the user's latest message needs (in the conversation's "
    "language; names, dates and key terms; no more than a dozen words) and call search with it."
)


class Toolbox:
    """The toolsets of one server: chooses each run's program and checks a toolset can run."""

    def __init__(self, settings: Settings, models: ModelRegistry, toolkit: Toolkit) -> None:
        self.settings = settings
        self.models = models
        self.toolkit = toolkit
        self.catalog = catalog(settings)

    def problems(self, toolset: str, model: str) -> list[str]:
        found = self.catalog.get(toolset)
        if found is None:
            return [f"The toolset {toolset} is not offered by this server (known: {', '.join(sorted(self.catalog))})."]
        if found.mode == "grounded" and found.needs_search and self.toolkit.search is None:
            return [
                f"The toolset {toolset} needs a web search backend, and none is configured on this server "
                "([search] in the configuration)."
            ]
        if found.mode == "agent" and not self._calls_tools(model):
            return [
                f"The toolset {toolset} needs a model that calls tools; {model} does not "
                "(supports_tools = true in its [models] table). Choose another model or toolset."
            ]
        return []

    def _calls_tools(self, model: str) -> bool:
        try:
            return self.models.config(model).supports_tools
        except KeyError:
            return False

    def program(self, draft: ContextDraft) -> Program | None:
        toolset = self.catalog.get(draft.tools)
        if toolset is None or toolset.mode == "none":
            return None
        call = ToolCallContext(
            workspace_id=draft.principal.workspace_id,
            user_id=draft.principal.user_id,
            agent_id=draft.agent.id,
            file_ids=list(draft.request.file_ids),
            memory_collections=list(draft.request.memory_collections),
            record=RunRecord(),  # replaced by the run's own record when it starts
            sites=toolset.sites,
        )
        if toolset.mode == "grounded":
            return GroundedProgram(self, toolset, draft, call)
        return AgentProgram(self, toolset, draft, call)


def _price(
    toolset: Toolset, record: RunRecord, output: ToolOutput | None = None, searches: int = 0, pages: int = 0
) -> None:
    if output is not None:
        searches, pages = output.searches, output.pages
    record.credits += toolset.credits_per_search * searches + toolset.credits_per_page * pages


def _sum(completions: Sequence[Completion], last: Completion) -> Completion:
    """The run's completion: every model call's tokens, the final answer's finish reason."""
    finish = "stop" if last.finish_reason == "tool_calls" else last.finish_reason
    return Completion(sum(c.prompt_tokens for c in completions), sum(c.completion_tokens for c in completions), finish)


async def _answer(plan: ExecutionPlan, request: ChatRequest, streaming: bool) -> AsyncIterator[str | Completion]:
    """One model call: text as it comes (or whole), then its Completion."""
    provider = plan.provider
    if streaming:
        stream = provider.stream(request)
        try:
            async for item in stream:
                yield item
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        return
    text, completion = await provider.complete(request)
    if text:
        yield text
    yield completion


@dataclass
class _ToolsetRun:
    """What a toolset's program works with: the server's toolbox, the toolset, the run's context
    draft and whose call it is."""

    box: Toolbox
    toolset: Toolset
    draft: ContextDraft
    call: ToolCallContext


class GroundedProgram(_ToolsetRun):
    async def run(
        self, plan: ExecutionPlan, record: RunRecord, streaming: bool
    ) -> AsyncIterator[str | StepStarted | Completion]:
        self.call.record = record
        draft = self.draft
        used: list[Completion] = []
        query = draft.input_text.strip()[:400]
        if self.box._calls_tools(plan.model) and query:
            step = record.begin("rewrite_query", {"message": query})
            yield StepStarted(step)
            query, completion = await self._rewrite(plan, query, step)
            if completion is not None:
                used.append(completion)
        results, searched = await self._search(query, record)
        for step in searched:
            yield StepStarted(step)
        pages = results[: self._pages()] if results else []
        reads = [
            record.begin(
                "read_url" if self.toolset.tools != ("wikipedia_search",) else "wikipedia_article", {"url": r.url}
            )
            for r in pages
        ]
        for step in reads:
            yield StepStarted(step)
        texts = await asyncio.gather(*(self._read(r, s) for r, s in zip(pages, reads, strict=True)))
        section = self._section(plan, query, results, texts, record, failed=bool(searched and searched[-1].error))
        draft.system.append(section)
        draft.record(
            "sources",
            {
                "toolset": self.toolset.name,
                "query": query,
                "results": len(results),
                "read": sum(1 for t in texts if t),
                "chars": len(section),
            },
        )
        system = draft.system_message()
        record.context = dict(draft.contributions)
        record.messages = system + draft.turns
        request = ChatRequest(messages=system + draft.history + draft.turns, sampling=plan.request.sampling)
        async for item in _answer(plan, request, streaming):
            if isinstance(item, Completion):
                used.append(item)
                yield _sum(used, item)
            else:
                yield item

    def _pages(self) -> int:
        settings = self.box.settings
        if self.toolset.tools == ("wikipedia_search",):
            return settings.wikipedia.results
        return settings.search.pages if settings.search is not None else 0

    async def _rewrite(self, plan: ExecutionPlan, message: str, step: Step) -> tuple[str, Completion | None]:
        """The model's search query for the conversation (its latest message when the model
        does not give one)."""
        draft = self.draft
        recent = (draft.history + draft.turns)[-REWRITE_HISTORY:]
        request = ChatRequest(
            messages=[{"role": "system", "content": REWRITE_NOTE}, *recent],
            sampling=Sampling(temperature=0.0, max_tokens=60),
            tools=(SEARCH_FUNCTION,),
            tool_choice={"type": "function", "function": {"name": "search"}},
        )
        try:
            _, completion = await plan.provider.complete(request)
        except Exception as exc:  # any failure: search with the message itself
            step.done(0, f"the query could not be rewritten ({_describe(exc)}); searched with the message")
            return message, None
        for call in completion.tool_calls:
            arguments = _arguments(call)
            query = arguments.get("query") if isinstance(arguments, dict) else None
            if isinstance(query, str) and query.strip():
                step.arguments["query"] = query.strip()[:400]
                step.done(len(query))
                return query.strip()[:400], completion
        step.done(0, "the model gave no query; searched with the message")
        return message, completion

    async def _search(self, query: str, record: RunRecord) -> tuple[list[SearchResult], list[Step]]:
        toolkit = self.box.toolkit
        wiki = self.toolset.tools == ("wikipedia_search",)
        tool = "wikipedia_search" if wiki else "web_search"
        arguments: dict[str, Any] = {"query": query}
        if self.toolset.sites:
            arguments["sites"] = list(self.toolset.sites)
        step = record.begin(tool, arguments)
        if not query:
            step.done(0, "nothing to search for: the message is empty")
            return [], [step]
        try:
            if wiki:
                results = await toolkit.wikipedia.search(query, count=self.box.settings.wikipedia.results)
            else:
                if toolkit.search is None:
                    raise SearchError("no web search backend is configured ([search])")
                count = self.box.settings.search.results if self.box.settings.search is not None else 5
                results = await toolkit.search.search(query, count=count, sites=self.toolset.sites)
        except SearchError as exc:
            step.done(0, str(exc))
            return [], [step]
        except Exception as exc:  # a search never fails the run
            log.warning("search %r failed", query, exc_info=exc)
            step.done(0, _describe(exc))
            return [], [step]
        _price(self.toolset, record, searches=1)
        step.done(sum(len(r.title) + len(r.snippet) + len(r.url) for r in results))
        return results, [step]

    async def _read(self, result: SearchResult, step: Step) -> str:
        """The text of one result's page ('' when it could not be read: the step says why)."""
        toolkit = self.box.toolkit
        try:
            if self.toolset.tools == ("wikipedia_search",):
                text = await toolkit.wikipedia.extract(result.title, max_chars=MAX_SOURCES_CHARS)
            else:
                text = (await toolkit.fetcher.fetch(result.url)).text
        except (FetchRefused, FetchFailed, SearchError) as exc:
            step.done(0, str(exc))
            return ""
        except Exception as exc:  # a page never fails the run
            log.warning("reading %s failed", result.url, exc_info=exc)
            step.done(0, _describe(exc))
            return ""
        _price(self.toolset, self.call.record, pages=1)
        step.done(len(text))
        return text

    def _budget(self, plan: ExecutionPlan) -> int:
        """Characters the sources may take: what the model's context leaves after everything
        else and the answer, within ``max_input_chars``, at most MAX_SOURCES_CHARS."""
        draft = self.draft
        used = sum(len(s) + 2 for s in draft.system) + sum(len(m["content"]) for m in draft.history + draft.turns)
        room = self.box.settings.max_input_chars - used - len(GROUNDED_HEADER) - 100
        context_length = getattr(plan.model_config.options, "context_length", None)
        if isinstance(context_length, int):
            answer = plan.request.sampling.max_tokens or context_length // 4
            tokens_left = context_length - answer - used // CHARS_PER_TOKEN - 64
            room = min(room, tokens_left * CHARS_PER_TOKEN)
        return max(0, min(room, MAX_SOURCES_CHARS))

    def _section(
        self,
        plan: ExecutionPlan,
        query: str,
        results: list[SearchResult],
        texts: Sequence[str],
        record: RunRecord,
        failed: bool,
    ) -> str:
        header = GROUNDED_HEADER.format(for_query=f' for "{query}"' if query else "")
        if failed:
            return header + "\n\nThe search failed: no sources are available. Say so if the answer needs them."
        if not results:
            return header + "\n\nThe search found nothing."
        budget = self._budget(plan)
        entries: list[str] = []
        read = [t for t in texts if t]
        share = budget // max(1, len(read)) if read else 0
        for i, result in enumerate(results):
            text = texts[i] if i < len(texts) else ""
            n = record.add_source(result.title, result.url, result.snippet)
            body = result.snippet
            if text and share >= MIN_SOURCE_CHARS:
                body = text[:share] + ("…" if len(text) > share else "")
            entry = f"[{n}] {result.title}\n{result.url}\n{body}".strip()
            if sum(len(e) + 2 for e in entries) + len(entry) > budget + len(results) * 200:
                break  # even the snippets do not fit a small model's context
            entries.append(entry)
        return header + "\n\n" + "\n\n".join(entries)


class AgentProgram(_ToolsetRun):
    async def run(
        self, plan: ExecutionPlan, record: RunRecord, streaming: bool
    ) -> AsyncIterator[str | StepStarted | Completion]:
        self.call.record = record
        settings = self.box.settings
        tools = {t.spec.name: t for t in self.box.toolkit.available(self.toolset.tools)}
        specs = tuple(t.spec for t in tools.values())
        messages = _with_note(plan.request.messages, AGENT_NOTE)
        deadline = time.monotonic() + settings.agent_max_seconds
        used: list[Completion] = []
        calls = 0
        while True:
            tokens = sum(c.prompt_tokens + c.completion_tokens for c in used)
            size = sum(len(str(m.get("content") or "")) for m in messages)
            exhausted = (
                not specs
                or calls >= settings.agent_max_steps
                or time.monotonic() >= deadline
                or tokens >= settings.agent_max_tokens
                or size >= settings.max_input_chars
            )
            request = ChatRequest(
                messages=_with_note(messages, FINAL_NOTE) if exhausted and used else messages,
                sampling=plan.request.sampling,
                tools=specs,
                tool_choice="none" if exhausted else "auto",
            )
            if not specs:
                request = ChatRequest(messages=messages, sampling=plan.request.sampling)
            completion: Completion | None = None
            text: list[str] = []
            async for item in _answer(plan, request, streaming):
                if isinstance(item, Completion):
                    completion = item
                else:
                    text.append(item)
                    yield item
            if completion is None:  # pragma: no cover - providers end with a Completion or raise
                return
            used.append(completion)
            if exhausted or not completion.tool_calls:
                record.messages = (
                    messages[:1] + self.draft.turns if messages and messages[0]["role"] == "system" else None
                )
                yield _sum(used, completion)
                return
            asked = list(completion.tool_calls)
            room = max(0, settings.agent_max_steps - calls)
            messages.append(
                {"role": "assistant", "content": "".join(text) or None, "tool_calls": [c.openai() for c in asked]}
            )
            steps = [record.begin(c.name, _stored_arguments(c)) for c in asked[:room]]
            for step in steps:
                yield StepStarted(step)
            remaining = max(0.1, deadline - time.monotonic())
            outputs = await asyncio.gather(
                *(self._run_tool(tools, c, s, remaining) for c, s in zip(asked[:room], steps, strict=True))
            )
            calls += len(steps)
            for c, output in zip(asked[:room], outputs, strict=True):
                messages.append({"role": "tool", "tool_call_id": c.id, "content": output})
            for c in asked[room:]:
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": c.id,
                        "content": "Error: the step limit of this answer is reached.",
                    }
                )

    async def _run_tool(self, tools: dict[str, Any], call: ToolCall, step: Step, remaining_s: float) -> str:
        tool = tools.get(call.name)
        if tool is None:
            message = f"there is no tool {call.name[:60]!r}; the tools are: {', '.join(tools)}"
            step.done(0, message)
            return f"Error: {message}"
        arguments = _arguments(call)
        if not isinstance(arguments, dict):
            step.done(0, "the arguments are not a JSON object")
            return "Error: the arguments must be a JSON object matching the tool's parameters."
        try:
            async with asyncio.timeout(remaining_s):
                output: ToolOutput = await tool.run(arguments, self.call)
        except ToolFailed as exc:
            step.done(0, str(exc))
            return f"Error: {exc}"
        except TimeoutError:
            step.done(0, "the answer's time limit was reached")
            return "Error: the answer's time limit was reached."
        except Exception as exc:  # a tool never fails the run
            log.warning("tool %s failed", call.name, exc_info=exc)
            step.done(0, _describe(exc))
            return f"Error: {_describe(exc)}"
        _price(self.toolset, self.call.record, output)
        step.done(len(output.text))
        return output.text


def _with_note(messages: Sequence[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """The messages with ``note`` added to the system message (one made if there is none)."""
    out = list(messages)
    if out and out[0].get("role") == "system":
        out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{note}"}
    else:
        out.insert(0, {"role": "system", "content": note})
    return out


def _arguments(call: ToolCall) -> Any:
    try:
        return orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        return None


def _stored_arguments(call: ToolCall) -> dict[str, Any]:
    arguments = _arguments(call)
    if isinstance(arguments, dict):
        return arguments
    return {"unparsed": call.arguments[:500]}


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}"[:500] if message else type(exc).__name__
