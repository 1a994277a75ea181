"""The platform's tools: what the ``agent`` toolset offers the model (OpenAI function calling),
and what the grounded toolsets run on the model's behalf.

Each tool is a ``ToolSpec`` (name, description, JSON Schema of its arguments) and a coroutine
``run(arguments, call) -> ToolOutput``. A tool never raises for a bad argument or a failed
search: it raises ``ToolFailed`` with a message the model reads (and the step records), and the
run goes on. Tools that find things number them as sources (``RunRecord.add_source``), so the
answer can cite ``[n]`` whichever tool found it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from opentess.executions.steps import RunRecord
from opentess.providers import ToolSpec
from opentess.toolsets.calculator import CalculatorError, calculate
from opentess.toolsets.search import SearchBackend, SearchError, SearchResult
from opentess.toolsets.web import Fetcher, FetchFailed, FetchRefused
from opentess.toolsets.wikipedia import Wikipedia

MAX_TOOL_TEXT = 8000  # characters of one tool's answer the model reads
MAX_QUERY_CHARS = 400


class ToolFailed(Exception):
    """The tool could not do what was asked; the message is for the model (and the step)."""


@dataclass(slots=True)
class ToolCallContext:
    """Whose call this is: what the knowledge and memory tools may see, and where sources go."""

    workspace_id: int
    user_id: int | None
    agent_id: int
    file_ids: Sequence[int]
    memory_collections: Sequence[int]
    record: RunRecord
    sites: Sequence[str] = ()


@dataclass(slots=True)
class ToolOutput:
    text: str
    searches: int = 0  # priced per search by the toolset
    pages: int = 0  # priced per page read


# (workspace, agent, the call's files, query, how many) -> [(label, text)]
KnowledgeSearch = Callable[[int, int, Sequence[int], str, int], Awaitable[list[tuple[str, str]]]]
# (user, collections or all, query, characters) -> [(memory id, text)]
MemorySearch = Callable[[int, Sequence[int], str, int], Awaitable[list[tuple[int, str]]]]


@dataclass
class Tool:
    spec: ToolSpec
    run: Callable[[dict[str, Any], ToolCallContext], Awaitable[ToolOutput]]
    needs: str = ""  # what the server must have configured: "search", "knowledge", "memories"


def _query(arguments: dict[str, Any], key: str = "query") -> str:
    value = arguments.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ToolFailed(f"{key} must be a non-empty string")
    return value.strip()[:MAX_QUERY_CHARS]


def _count(arguments: dict[str, Any], default: int, most: int) -> int:
    value = arguments.get("count", default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return max(1, min(most, int(value)))


def _results_text(results: Sequence[SearchResult], record: RunRecord) -> str:
    if not results:
        return "No results."
    lines = []
    for r in results:
        n = record.add_source(r.title, r.url, r.snippet)
        lines.append(f"[{n}] {r.title}\n{r.url}\n{r.snippet}")
    return "\n\n".join(lines)


def _object(properties: dict[str, Any], required: Sequence[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


QUERY = {"type": "string", "description": "What to search for"}


@dataclass
class Toolkit:
    """The platform tools of one server, bound to its search backend, Wikipedia client, fetcher
    and (when those capabilities run) its files and memories."""

    search: SearchBackend | None
    wikipedia: Wikipedia
    fetcher: Fetcher
    knowledge: KnowledgeSearch | None = None
    memories: MemorySearch | None = None
    search_results: int = 5
    wikipedia_results: int = 3
    tools: dict[str, Tool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for tool in (
            Tool(
                ToolSpec(
                    "web_search",
                    "Search the web. Returns numbered results (title, URL, snippet) you can cite as [n]; "
                    "read a result's page with read_url.",
                    _object({"query": QUERY, "count": {"type": "integer", "minimum": 1, "maximum": 10}}, ["query"]),
                ),
                self.web_search,
                "search",
            ),
            Tool(
                ToolSpec(
                    "read_url",
                    "Read a web page (HTML, text or PDF) and return its main text.",
                    _object({"url": {"type": "string", "description": "An http(s) URL"}}, ["url"]),
                ),
                self.read_url,
            ),
            Tool(
                ToolSpec(
                    "wikipedia_search",
                    "Search Wikipedia. Returns numbered articles you can cite as [n], with the text of the first.",
                    _object({"query": QUERY}, ["query"]),
                ),
                self.wikipedia_search,
            ),
            Tool(
                ToolSpec(
                    "knowledge_search",
                    "Search the files this agent was given (its knowledge). Returns the passages that match.",
                    _object({"query": QUERY}, ["query"]),
                ),
                self.knowledge_search,
                "knowledge",
            ),
            Tool(
                ToolSpec(
                    "memory_search",
                    "Search what the user asked to be remembered (their memories).",
                    _object({"query": QUERY}, ["query"]),
                ),
                self.memory_search,
                "memories",
            ),
            Tool(
                ToolSpec(
                    "calculator",
                    "Exact arithmetic: + - * / // % ** (or ^), parentheses, pi, e, abs, round, sqrt, floor, "
                    "ceil, min, max. Use it for any calculation.",
                    _object(
                        {"expression": {"type": "string", "description": "e.g. (1.5 + 2) * 3 / 7"}}, ["expression"]
                    ),
                ),
                self.calculator,
            ),
            Tool(
                ToolSpec(
                    "current_time",
                    "The current date and time, in UTC or in an IANA time zone.",
                    _object({"timezone": {"type": "string", "description": "e.g. America/Sao_Paulo; default UTC"}}, []),
                ),
                self.current_time,
            ),
        ):
            self.tools[tool.spec.name] = tool

    def available(self, names: Sequence[str]) -> list[Tool]:
        """Of these tools, those this server can run (web_search needs [search], …)."""
        have = {
            "": True,
            "search": self.search is not None,
            "knowledge": self.knowledge is not None,
            "memories": self.memories is not None,
        }
        return [self.tools[n] for n in names if n in self.tools and have[self.tools[n].needs]]

    # the tools ----------------------------------------------------------------------------------

    async def web_search(self, arguments: dict[str, Any], call: ToolCallContext) -> ToolOutput:
        if self.search is None:
            raise ToolFailed("web search is not configured on this server")
        query = _query(arguments)
        try:
            results = await self.search.search(
                query, count=_count(arguments, self.search_results, 10), sites=call.sites
            )
        except SearchError as exc:
            raise ToolFailed(str(exc)) from None
        return ToolOutput(_results_text(results, call.record), searches=1)

    async def read_url(self, arguments: dict[str, Any], call: ToolCallContext) -> ToolOutput:
        url = _query(arguments, "url")
        try:
            page = await self.fetcher.fetch(url)
        except (FetchRefused, FetchFailed) as exc:
            raise ToolFailed(str(exc)) from None
        text = page.text[:MAX_TOOL_TEXT]
        n = call.record.add_source(page.title or page.final_url, page.final_url, page.text[:200])
        cut = " (cut)" if page.truncated or len(page.text) > MAX_TOOL_TEXT else ""
        return ToolOutput(f"[{n}] {page.title}\n{page.final_url}{cut}\n\n{text}", pages=1)

    async def wikipedia_search(self, arguments: dict[str, Any], call: ToolCallContext) -> ToolOutput:
        query = _query(arguments)
        try:
            results = await self.wikipedia.search(query, count=self.wikipedia_results)
            extract = await self.wikipedia.extract(results[0].title, max_chars=MAX_TOOL_TEXT // 2) if results else ""
        except SearchError as exc:
            raise ToolFailed(str(exc)) from None
        text = _results_text(results, call.record)
        if extract:
            text += f"\n\nThe first article's text:\n{extract}"
        return ToolOutput(text, searches=1, pages=1 if extract else 0)

    async def knowledge_search(self, arguments: dict[str, Any], call: ToolCallContext) -> ToolOutput:
        if self.knowledge is None:
            raise ToolFailed("files are not available on this server")
        query = _query(arguments)
        found = await self.knowledge(call.workspace_id, call.agent_id, call.file_ids, query, 5)
        if not found:
            return ToolOutput("No passage of the agent's files matches.")
        return ToolOutput("\n\n".join(f"[{label}]\n{text}" for label, text in found)[:MAX_TOOL_TEXT])

    async def memory_search(self, arguments: dict[str, Any], call: ToolCallContext) -> ToolOutput:
        if self.memories is None or call.user_id is None:
            raise ToolFailed("memories are not available for this call")
        query = _query(arguments)
        found = await self.memories(call.user_id, call.memory_collections, query, MAX_TOOL_TEXT // 2)
        if not found:
            return ToolOutput("No memory matches.")
        return ToolOutput("\n".join(f"- {text}" for _, text in found))

    async def calculator(self, arguments: dict[str, Any], call: ToolCallContext) -> ToolOutput:
        expression = _query(arguments, "expression")
        try:
            # exact arithmetic on big numbers takes a little CPU: off the event loop
            return ToolOutput(await asyncio.to_thread(calculate, expression))
        except CalculatorError as exc:
            raise ToolFailed(str(exc)) from None

    async def current_time(self, arguments: dict[str, Any], call: ToolCallContext) -> ToolOutput:
        name = arguments.get("timezone") or "UTC"
        try:
            zone = UTC if name == "UTC" else ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolFailed(f"unknown time zone {str(name)[:60]!r} (an IANA name, e.g. Europe/Lisbon)") from None
        now = datetime.now(zone)
        return ToolOutput(f"{now.isoformat(timespec='seconds')} ({now:%A}, {name})")
