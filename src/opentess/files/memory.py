"""BM25 in memory for small knowledge: when an agent's files hold few chunks (at most
``files_memory_index_chunks`` together), their text and term statistics are kept in this
process and searched without a database round trip — on every call of such an agent a search
through the database costs more than the rest of the call (measured: about 0.1 ms of FTS5 per
search on an idle database, 0.3 ms of server CPU per call under load). Larger knowledge is
searched in the database (opentess.files.search), whose ranking this one matches: the same
tokens (lower case without diacritics, letters and digits) and FTS5's BM25 (k1 = 1.2,
b = 0.75, IDF floored just above zero).

The index of a set of files is built once from their chunks (files do not change once
processed; the key holds each file's generation) and kept while it fits its share of
``files_cache_mb`` (least recently used first out)."""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.files.search import COMMON_MIN_CHUNKS, COMMON_SHARE, Hit, fold
from opentess.files.tables import FileChunk

K1 = 1.2
B = 0.75
MIN_IDF = 1e-6  # FTS5's floor for terms in more than half the documents
_TOKEN = re.compile(r"[^\W_]+")

Key = tuple[tuple[int, int], ...]  # (file id, generation) of each file of the set


@dataclass(slots=True)
class Knowledge:
    """The chunks of a set of files, with their terms' postings."""

    ids: list[int]
    file_ids: list[int]
    ordinals: list[int]
    locations: list[str]
    texts: list[str]
    tokens: list[int]
    norms: list[float]  # BM25's length normalisation of each chunk: k1 * (1 - b + b * length / average)
    postings: dict[str, list[tuple[int, int]]]  # term → (chunk position, term frequency)
    size: int  # approximate bytes held

    @classmethod
    def build(cls, rows: Sequence[tuple[int, int, int, str, str, int]]) -> Knowledge:
        postings: dict[str, list[tuple[int, int]]] = {}
        lengths: list[int] = []
        for n, row in enumerate(rows):
            words = _TOKEN.findall(fold(row[4]))
            lengths.append(len(words))
            for word, count in Counter(words).items():
                postings.setdefault(word, []).append((n, count))
        average = (sum(lengths) / len(lengths) if lengths else 0.0) or 1.0
        size = sum(len(r[4]) * 2 + len(r[3]) * 2 + 160 for r in rows) + sum(64 + 48 * len(p) for p in postings.values())
        return cls(
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            [r[4] for r in rows],
            [r[5] for r in rows],
            [K1 * (1 - B + B * length / average) for length in lengths],
            postings,
            size,
        )

    def search(self, words: Sequence[str], limit: int) -> list[Hit]:
        """BM25 over these chunks, best first."""
        total = len(self.ids)
        common = total * COMMON_SHARE if total >= COMMON_MIN_CHUNKS else math.inf
        scores: dict[int, float] = {}
        norms = self.norms
        for word in words:
            postings = self.postings.get(word)
            if not postings or len(postings) > common:
                continue  # in no chunk, or in most of them (as the database's search leaves them out)
            df = len(postings)
            idf = max(math.log((total - df + 0.5) / (df + 0.5)), MIN_IDF)
            for position, tf in postings:
                scores[position] = scores.get(position, 0.0) + idf * tf * (K1 + 1) / (tf + norms[position])
        best = heapq.nlargest(limit, scores.items(), key=lambda item: item[1])
        return [
            Hit(self.ids[p], self.file_ids[p], self.ordinals[p], self.locations[p], self.texts[p], self.tokens[p], s)
            for p, s in best
        ]


class MemoryIndex:
    def __init__(self, engine: AsyncEngine, max_bytes: int) -> None:
        self.engine = engine
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Key, Knowledge] = OrderedDict()
        self._bytes = 0

    async def knowledge(self, files: Key) -> Knowledge:
        entry = self._entries.get(files)
        if entry is not None:
            self._entries.move_to_end(files)
            return entry
        stmt = (
            select(
                FileChunk.id, FileChunk.file_id, FileChunk.ordinal, FileChunk.location, FileChunk.text, FileChunk.tokens
            )
            .where(FileChunk.file_id.in_([file_id for file_id, _ in files]))
            .order_by(FileChunk.file_id, FileChunk.ordinal)
        )
        async with self.engine.connect() as conn:
            rows = [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in (await conn.execute(stmt)).all()]
        entry = Knowledge.build(rows)
        if entry.size <= self.max_bytes:
            self._entries[files] = entry
            self._bytes += entry.size
            while self._bytes > self.max_bytes and self._entries:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.size
        return entry
