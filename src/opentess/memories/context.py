"""Memories in the model's context: a call's ``memory_collections`` put those collections'
memories into the system message — all of them when they fit the budget, otherwise the ones
most relevant to the latest user message (full-text: FTS5 on SQLite, PostgreSQL's own text
search on PostgreSQL), then the newest, as many as fit. What was used is recorded on the
execution (``context.memories``).

The budget is the smaller of ``memories_max_chars`` and what ``max_input_chars`` leaves after
the instructions, the history and the new messages: memories never make a call too large.
Ranking needs no index of its own: it runs over one user's chosen collections only, and only
when they do not all fit."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from opentess.errors import InvalidInput
from opentess.executions.context import SECTION_BREAK, ContextDraft
from opentess.memories.store import MemoryStore
from opentess.memories.tables import Memory

HEADER = "## Memories\nWhat the user has asked you to remember (from their memory collections):"
MAX_TERMS = 32
_WORDS = re.compile(r"\w+")


@dataclass(slots=True)
class Selection:
    memories: list[tuple[int, str]]  # (id, text), in the order the model sees them
    available: int
    how: str  # "all" | "relevance"


def render(memories: Sequence[tuple[int, str]]) -> str:
    """The system-message section; each memory costs ``len + 2 × newlines + 3`` characters."""
    return HEADER + "\n" + "\n".join("- " + body.replace("\n", "\n  ") for _, body in memories)


def terms(message: str) -> list[str]:
    """The words of a message to search for (lower-cased, unique, at most 32)."""
    found = [w.lower() for w in _WORDS.findall(message) if len(w) > 1 or w.isdigit()]
    return list(dict.fromkeys(found))[:MAX_TERMS]


class MemoriesSource:
    """The context source of the memories capability (after instructions and knowledge)."""

    name = "memories"

    def __init__(self, engine: AsyncEngine, store: MemoryStore, max_chars: int, max_input_chars: int) -> None:
        self.engine = engine
        self.store = store
        self.max_chars = max_chars
        self.max_input_chars = max_input_chars

    async def contribute(self, draft: ContextDraft) -> None:
        asked = draft.request.memory_collections
        if not asked:
            return
        user_id = draft.principal.user_id
        owned = await self.store.owned(user_id, asked)
        missing = [str(c) for c in asked if c not in owned]
        if missing:
            # another user's collection is exactly a missing one
            raise InvalidInput(
                {
                    "memory_collections": [
                        f"The selected memory_collections is invalid: no memory collection {', '.join(missing)}."
                    ]
                }
            )
        budget = min(self.max_chars, self._room(draft))
        selection = await select_memories(self.engine, user_id, asked, budget, draft.input_text)
        section = render(selection.memories) if selection.memories else ""
        if section:
            draft.system.append(section)
        draft.record(
            self.name,
            {
                "collections": list(asked),
                "used": [memory_id for memory_id, _ in selection.memories],
                "available": selection.available,
                "selection": selection.how,
                "chars": len(section),
            },
        )

    def _room(self, draft: ContextDraft) -> int:
        """What ``max_input_chars`` leaves for one more system section."""
        used = sum(len(s) + len(SECTION_BREAK) for s in draft.system)
        used += sum(len(m["content"]) for m in draft.history) + sum(len(m["content"]) for m in draft.turns)
        return self.max_input_chars - used - len(SECTION_BREAK)


def _cost() -> Any:
    newlines = func.length(Memory.memory) - func.length(func.replace(Memory.memory, "\n", ""))
    return func.length(Memory.memory) + 2 * newlines + 3


async def select_memories(
    engine: AsyncEngine, user_id: int, collection_ids: Sequence[int], budget: int, message: str
) -> Selection:
    """The memories of these collections that go into a context of ``budget`` characters."""
    room = budget - len(HEADER)
    where = (Memory.user_id == user_id, Memory.collection_id.in_(list(collection_ids)))
    async with engine.connect() as conn:
        costs = [
            (int(i), int(c))
            for i, c in (await conn.execute(select(Memory.id, _cost()).where(*where).order_by(Memory.id))).all()
        ]
        if not costs:
            return Selection([], 0, "all")
        if sum(c for _, c in costs) <= room:
            order, how = [i for i, _ in costs], "all"
        else:
            ranked = await _ranked(conn, user_id, collection_ids, terms(message))
            seen = set(ranked)
            order = ranked + [i for i, _ in reversed(costs) if i not in seen]  # then the newest
            how = "relevance"
        cost_of = dict(costs)
        picked: list[int] = []
        for memory_id in order:
            if cost_of[memory_id] <= room:
                picked.append(memory_id)
                room -= cost_of[memory_id]
        texts: dict[int, str] = {}
        if picked:
            rows = (await conn.execute(select(Memory.id, Memory.memory).where(Memory.id.in_(picked)))).all()
            texts = {int(i): str(m) for i, m in rows}
    return Selection([(i, texts[i]) for i in picked if i in texts], len(costs), how)


async def _ranked(conn: AsyncConnection, user_id: int, collection_ids: Sequence[int], words: list[str]) -> list[int]:
    """Ids of the memories that match any of ``words``, most relevant first."""
    if not words:
        return []
    params = {"user_id": user_id, "collections": list(collection_ids)}
    if conn.dialect.name == "postgresql":
        stmt = text(
            "SELECT id FROM memories WHERE user_id = :user_id AND collection_id IN :collections "
            "AND to_tsvector('simple', memory) @@ to_tsquery('simple', :query) "
            "ORDER BY ts_rank(to_tsvector('simple', memory), to_tsquery('simple', :query)) DESC, id DESC"
        ).bindparams(bindparam("collections", expanding=True))
        # the words are \w+ runs: no tsquery operator can be among them
        rows = await conn.execute(stmt, {**params, "query": " | ".join(words)})
        return [int(r[0]) for r in rows]
    # SQLite: an FTS5 index of just these memories, in the connection's temporary database
    # (never in the schema); what this fills is rolled back with the connection's transaction
    await conn.execute(
        text(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.memory_search "
            "USING fts5(memory, tokenize = 'unicode61 remove_diacritics 2')"
        )
    )
    await conn.execute(text("DELETE FROM temp.memory_search"))
    await conn.execute(
        text(
            "INSERT INTO temp.memory_search (rowid, memory) SELECT id, memory FROM memories "
            "WHERE user_id = :user_id AND collection_id IN :collections"
        ).bindparams(bindparam("collections", expanding=True)),
        params,
    )
    query = " OR ".join(f'"{w}"' for w in words)
    rows = await conn.execute(
        text("SELECT rowid FROM temp.memory_search WHERE memory_search MATCH :query ORDER BY rank, rowid DESC"),
        {"query": query},
    )
    found = [int(r[0]) for r in rows]
    await conn.execute(text("DELETE FROM temp.memory_search"))
    return found
