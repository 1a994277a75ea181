"""The toolsets capability (see opentess.capabilities): the server's search backend, Wikipedia
client and guarded fetcher, the platform tools over them (and over the files and memories
capabilities when they run), and the program factory the execution service asks for each run.

It comes after the files and memories capabilities, whose services its knowledge and memory
tools use — through the same rules as their context sources: the agent's linked files and the
files the call names in the caller's workspace; the caller's own memories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentess.capabilities import Capability
from opentess.settings import Settings
from opentess.toolsets.programs import Toolbox
from opentess.toolsets.search import SearchBackend, SearchConfig, make_search_backend
from opentess.toolsets.tools import KnowledgeSearch, MemorySearch, Toolkit
from opentess.toolsets.web import Fetcher
from opentess.toolsets.wikipedia import Wikipedia

MAX_COLLECTIONS = 1000  # of a user's collections memory_search looks through


def search_backend(settings: Settings) -> SearchBackend | None:
    table = settings.search
    if table is None:
        return None
    return make_search_backend(SearchConfig(table.provider, table.base_url, table.resolved_api_key(), table.timeout_s))


def make_toolkit(
    settings: Settings, knowledge: KnowledgeSearch | None = None, memories: MemorySearch | None = None
) -> Toolkit:
    return Toolkit(
        search=search_backend(settings),
        wikipedia=Wikipedia(
            settings.wikipedia.base_url,
            settings.wikipedia.language,
            settings.wikipedia.timeout_s,
            user_agent=settings.wikipedia.user_agent,
        ),
        fetcher=Fetcher(
            allow_hosts=settings.fetch_allow_hosts,
            max_bytes=settings.fetch_max_bytes,
            timeout_s=settings.fetch_timeout_s,
        ),
        knowledge=knowledge,
        memories=memories,
        search_results=settings.search.results if settings.search is not None else 5,
        wikipedia_results=settings.wikipedia.results,
    )


def _knowledge(files: Any) -> KnowledgeSearch:
    from opentess.files.knowledge import KnowledgeSource

    retriever = KnowledgeSource(files)

    async def search(
        workspace_id: int, agent_id: int, file_ids: Sequence[int], query: str, limit: int
    ) -> list[tuple[str, str]]:
        linked = await files.linked(agent_id)
        named = await files.store.many(list(file_ids), workspace_id) if file_ids else {}
        ready = [f for f in {f.id: f for f in [*named.values(), *linked]}.values() if f.ready]
        if not ready:
            return []
        hits, _ = await retriever.retrieve(ready, query)
        names = {f.id: f.filename for f in ready}
        return [(f"{names[h.file_id]}, {h.location}", h.text) for h in hits[:limit]]

    return search


def _memories(engine: Any, store: Any) -> MemorySearch:
    from opentess.memories.context import select_memories

    async def search(user_id: int, collections: Sequence[int], query: str, chars: int) -> list[tuple[int, str]]:
        ids = list(collections)
        if not ids:
            found, _ = await store.collections(user_id, search=None, offset=0, limit=MAX_COLLECTIONS)
            ids = [c.id for c in found]
        selection = await select_memories(engine, user_id, ids, chars, query)
        return selection.memories

    return search


def capability(state: Any) -> Capability:
    files = state.capabilities.get("files")
    memories = state.capabilities.get("memories")
    toolkit = make_toolkit(
        state.settings,
        knowledge=_knowledge(files.extras["files"]) if files is not None else None,
        memories=_memories(state.engine, memories.extras["store"]) if memories is not None else None,
    )
    state.service.programs = Toolbox(state.settings, state.models, toolkit)

    async def aclose() -> None:
        if toolkit.search is not None:
            await toolkit.search.aclose()
        await toolkit.wikipedia.aclose()
        await toolkit.fetcher.aclose()

    return Capability("toolsets", aclose=aclose, extras={"toolkit": toolkit})
