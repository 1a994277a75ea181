"""Toolsets: what an agent's ``tools`` value names, and what it makes an execution do.

A toolset is a named set of tools plus a mode:

- ``none`` — the model answers alone (``no-tools``);
- ``grounded`` — the server searches before the model answers (any model, the embedded one
  included): a query from the latest user message, the results' pages read, their main text put
  in the context as numbered sources the answer can cite (``internet``, ``wikipedia``, and the
  site-restricted ``twitter``, ``reddit``, …);
- ``agent`` — the model calls the platform's tools itself, in a bounded loop (models whose table
  says ``supports_tools = true``).

Built-ins are registered exactly as a third-party toolset would be (``register_toolset``), and a
``[toolsets.NAME]`` table of the configuration adds or replaces one of a known kind."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from opentess.settings import ModelConfig, Settings, ToolsetTable

Mode = Literal["none", "grounded", "agent"]
# what each kind of [toolsets.NAME] table makes: its mode and its tools
KINDS: dict[str, tuple[Mode, tuple[str, ...]]] = {
    "none": ("none", ()),
    "internet": ("grounded", ("web_search",)),
    "wikipedia": ("grounded", ("wikipedia_search",)),
    "agent": (
        "agent",
        (
            "web_search",
            "read_url",
            "wikipedia_search",
            "knowledge_search",
            "memory_search",
            "calculator",
            "current_time",
        ),
    ),
}
SEARCH_TOOLS = frozenset({"web_search"})  # tools that need the [search] backend


@dataclass(frozen=True, slots=True)
class Toolset:
    name: str
    mode: Mode
    tools: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()  # a grounded web search restricted to these sites
    description: str = ""
    credits_per_search: float = 0.0
    credits_per_page: float = 0.0

    @property
    def needs_search(self) -> bool:
        """A grounded web search: nothing to do without a search backend (the agent mode
        offers its other tools without one)."""
        return self.mode == "grounded" and any(tool in SEARCH_TOOLS for tool in self.tools)


def _from_kind(name: str, kind: str, sites: Iterable[str] = (), description: str = "", **prices: float) -> Toolset:
    mode, tools = KINDS[kind]
    return Toolset(name, mode, tools, tuple(sites), description, **prices)


_REGISTERED: dict[str, Toolset] = {}


def register_toolset(toolset: Toolset) -> Toolset:
    """Make a toolset available to every agent of the server (call before the app starts)."""
    _REGISTERED[toolset.name] = toolset
    return toolset


for _builtin in (
    _from_kind("no-tools", "none", description="The model answers alone"),
    _from_kind("internet", "internet", description="Searches the web, reads the results, cites them"),
    _from_kind("wikipedia", "wikipedia", description="Searches Wikipedia, reads the articles, cites them"),
    _from_kind("agent", "agent", description="The model uses the platform's tools itself, up to 25 steps"),
    # Tess's site-restricted search toolsets
    _from_kind("twitter", "internet", ("x.com", "twitter.com"), "Searches posts on X (Twitter)"),
    _from_kind("reddit", "internet", ("reddit.com",), "Searches Reddit"),
    _from_kind("linkedin", "internet", ("linkedin.com",), "Searches LinkedIn"),
    _from_kind("quora", "internet", ("quora.com",), "Searches Quora"),
    _from_kind("medium", "internet", ("medium.com",), "Searches Medium"),
    _from_kind("youtube", "internet", ("youtube.com",), "Searches YouTube"),
    _from_kind("github", "internet", ("github.com",), "Searches GitHub"),
    _from_kind("stackoverflow", "internet", ("stackoverflow.com",), "Searches Stack Overflow"),
):
    register_toolset(_builtin)


def catalog(settings: Settings) -> dict[str, Toolset]:
    """Every toolset this server offers: the registered ones, then the configuration's tables."""
    found = dict(_REGISTERED)
    for name, table in settings.toolsets.items():
        found[name] = _from_table(name, table)
    return found


def _from_table(name: str, table: ToolsetTable) -> Toolset:
    return _from_kind(
        name,
        table.kind,
        table.sites,
        table.description,
        credits_per_search=table.credits_per_search,
        credits_per_page=table.credits_per_page,
    )


def problems(
    options: Sequence[str],
    model_names: Sequence[str],
    settings: Settings,
    *,
    default_toolset: str | None = None,
    default_model: str | None = None,
) -> list[str]:
    """What is wrong with offering these toolsets (the options of an agent's ``tools``
    question) with these models, on this server: unknown names, a search toolset with no search
    backend configured, the agent mode with no model that calls tools, or as the default with a
    default model that does not."""
    known = catalog(settings)
    found: list[str] = []
    unknown = [name for name in options if name not in known]
    if unknown:
        found.append(f"unknown toolset(s) {', '.join(unknown)}; this server offers: {', '.join(sorted(known))}")
    chosen = [known[name] for name in options if name in known]
    needing_search = [t.name for t in chosen if t.needs_search]
    if needing_search and settings.search is None:
        found.append(
            f"{', '.join(needing_search)} need(s) a web search backend: set [search] in the configuration "
            "(provider = searxng, brave or tavily; docs/toolsets.md)"
        )
    agentic = [t.name for t in chosen if t.mode == "agent"]
    if agentic:
        models: Mapping[str, ModelConfig] = settings.models
        calling = [m for m in model_names if m in models and models[m].supports_tools]
        if not calling:
            found.append(
                f"{', '.join(agentic)} need(s) a model that calls tools, and none of {', '.join(model_names)} does "
                "(supports_tools = true in the model's table)"
            )
        elif (
            default_toolset in agentic
            and default_model is not None
            and default_model in models
            and not models[default_model].supports_tools
        ):
            found.append(
                f"the default toolset {default_toolset} needs a model that calls tools, and the default model "
                f"{default_model} does not: make a model that does the default, or another toolset"
            )
    return found
