"""Retrieval: the chunks of a set of files most relevant to a question.

- Full text on both databases. SQLite: FTS5's BM25 over ``file_chunks_fts``. PostgreSQL: the
  chunks' tsvector under a GIN index, scored as BM25 is — each query term's saturating term
  frequency with length normalisation (``ts_rank`` of that term, normalisation 1) weighted by
  the term's inverse document frequency.
- Bounded work. A query's cost grows with how many chunks contain its terms, and a term found
  in most chunks adds almost nothing to BM25 (its IDF is near zero, negative past half). So the
  query's terms are taken rarest first, while the chunks they match stay within a budget, and a
  term in more than half of the chunks is left out (document frequencies from FTS5's vocabulary
  on SQLite, from PostgreSQL's own statistics of the column; cached).
- Vectors, when an embedding model is configured: cosine similarity over the files' chunk
  embeddings, kept in memory per file (files do not change once processed), and the two
  rankings fused by reciprocal rank (RRF, k = 60)."""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.files.tables import FileChunk

MAX_QUERY_TERMS = 12
# chunks a query may have to score: SQLite walks postings in C (about 1 µs each); PostgreSQL
# ranks each candidate row once per term (about 3 µs each)
SQLITE_POSTINGS = 20_000
POSTGRES_RANKINGS = 6_000
STATS_TTL_S = 300.0
EMPTY_STATS_TTL_S = 5.0  # no statistics yet (a new table): look again soon
COMMON_SHARE = 0.5  # a term in more chunks than this share of them is left out…
COMMON_MIN_CHUNKS = 10  # …once there are this many chunks
RRF_K = 60
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    file_id: int
    ordinal: int
    location: str
    text: str
    tokens: int
    score: float


def fold(value: str) -> str:
    """Lower case without diacritics: what both indexes compare ("Café" and "cafe" match)."""
    decomposed = unicodedata.normalize("NFKD", value.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def terms(question: str, limit: int = 32) -> list[str]:
    words = [w for w in _WORD.findall(fold(question)) if len(w) > 1 or w.isdigit()]
    return list(dict.fromkeys(words))[:limit]


class _TTL:
    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.items: dict[str, tuple[float, int]] = {}

    def get(self, key: str) -> int | None:
        hit = self.items.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: str, value: int) -> None:
        if len(self.items) >= self.max_entries:
            self.items.clear()
        self.items[key] = (time.monotonic() + self.ttl_s, value)


class FullText:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._df = _TTL(STATS_TTL_S)
        self._pg_stats: tuple[float, dict[str, float], float, float] | None = None  # (at, freqs, floor, rows)
        self._sqlite_total: tuple[float, int] | None = None  # (until, chunks)

    # document frequencies -------------------------------------------------------------------------

    async def _sqlite_df(self, words: list[str]) -> dict[str, int]:
        found = {w: v for w in words if (v := self._df.get(w)) is not None}
        missing = [w for w in words if w not in found]
        if missing:
            stmt = text("SELECT term, doc FROM file_chunks_fts_vocab WHERE term IN :terms").bindparams(
                bindparam("terms", expanding=True)
            )
            async with self.engine.connect() as conn:
                rows = {str(r[0]): int(r[1]) for r in (await conn.execute(stmt, {"terms": missing})).all()}
            for word in missing:
                found[word] = int(rows.get(word, 0))
                self._df.put(word, found[word])
        return found

    async def _sqlite_chunks(self, at_least: int) -> int:
        """How many chunks there are (cached; counted again when a document frequency shows
        the count is out of date)."""
        cached = self._sqlite_total
        if cached is not None and cached[0] > time.monotonic() and cached[1] >= at_least:
            return cached[1]
        async with self.engine.connect() as conn:
            total = int((await conn.execute(select(func.count()).select_from(FileChunk))).scalar_one())
        self._sqlite_total = (time.monotonic() + STATS_TTL_S, total)
        return total

    async def _postgres_stats(self) -> tuple[dict[str, float], float, float]:
        """PostgreSQL's statistics of the tsvector column (ANALYZE keeps them): the most common
        lexemes with the share of rows holding each, the share below which a lexeme is not
        listed, and the table's row count."""
        cached = self._pg_stats
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2], cached[3]
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT most_common_elems::text::text[] AS elems, most_common_elem_freqs AS freqs "
                        "FROM pg_stats WHERE tablename = 'file_chunks' AND attname = 'search_vector'"
                    )
                )
            ).first()
            rows = (await conn.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'file_chunks'"))).scalar()
        freqs: dict[str, float] = {}
        floor = 0.0
        if row is not None and row.elems:
            values = list(row.freqs)
            freqs = dict(zip(row.elems, values[: len(row.elems)], strict=False))
            floor = float(values[len(row.elems)]) if len(values) > len(row.elems) else 0.0  # the least listed share
        count = max(float(rows or 0), 0.0)
        self._pg_stats = (time.monotonic() + (STATS_TTL_S if freqs else EMPTY_STATS_TTL_S), freqs, floor, count)
        return freqs, floor, count

    async def _postgres_df(self, words: list[str]) -> tuple[dict[str, float], float]:
        freqs, floor, rows = await self._postgres_stats()
        # a lexeme not listed is rarer than every listed one: PostgreSQL's own planner
        # estimates it at half the least listed share
        unlisted = floor / 2 * rows if freqs else 1.0
        return {w: freqs[w] * rows if w in freqs else unlisted for w in words}, rows

    # selection ---------------------------------------------------------------------------------------

    @staticmethod
    def choose(frequencies: dict[str, float], budget: float, per_term: bool, total: float = 0.0) -> list[str]:
        """The rarest terms first, while the work they imply stays within ``budget``: their
        postings (SQLite) or candidates × terms (PostgreSQL); at least the rarest one. Of
        ``total`` chunks (when known), a term in more than half is left out."""
        chosen: list[str] = []
        postings = 0.0
        common = total * COMMON_SHARE if total >= COMMON_MIN_CHUNKS else math.inf
        for word, df in sorted(frequencies.items(), key=lambda item: item[1]):
            if (df <= 0 and not per_term) or df > common:
                continue  # in no chunk at all, or in most of them
            cost = (postings + df) * (len(chosen) + 1) if per_term else postings + df
            if chosen and (cost > budget or len(chosen) >= MAX_QUERY_TERMS):
                break
            chosen.append(word)
            postings += df
        return chosen

    async def refresh_statistics(self) -> None:
        """PostgreSQL: analyze the chunks once if the column has no statistics yet (a new
        table), so that term choice has document frequencies; autovacuum keeps them fresh."""
        if not self.postgres:
            return
        async with self.engine.connect() as conn:
            known = (
                await conn.execute(
                    text("SELECT 1 FROM pg_stats WHERE tablename = 'file_chunks' AND attname = 'search_vector'")
                )
            ).first()
        if known is None:
            async with self.engine.begin() as conn:
                await conn.execute(text("ANALYZE file_chunks"))
            self._pg_stats = None

    # searching ---------------------------------------------------------------------------------------

    async def search(self, file_ids: Sequence[int], question: str, limit: int, chunks_in_files: int) -> list[Hit]:
        words = terms(question)
        if not words or not file_ids:
            return []
        if self.postgres:
            return await self._postgres(list(file_ids), words, limit, chunks_in_files)
        return await self._sqlite(list(file_ids), words, limit)

    async def _sqlite(self, file_ids: list[int], words: list[str], limit: int) -> list[Hit]:
        frequencies = await self._sqlite_df(words)
        total = await self._sqlite_chunks(max(frequencies.values(), default=0))
        chosen = self.choose(dict(frequencies), SQLITE_POSTINGS, per_term=False, total=total)
        if not chosen:
            return []
        match = " OR ".join(f'"{w}"' for w in chosen)
        stmt = text(
            "SELECT c.id, c.file_id, c.ordinal, c.location, c.text, c.tokens, bm25(file_chunks_fts) AS score "
            "FROM file_chunks_fts JOIN file_chunks AS c ON c.id = file_chunks_fts.rowid "
            "WHERE file_chunks_fts MATCH :match AND c.file_id IN :files ORDER BY score LIMIT :limit"
        ).bindparams(bindparam("files", expanding=True))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt, {"match": match, "files": file_ids, "limit": limit})).all()
        # FTS5's bm25() is lower for better matches
        return [Hit(r[0], r[1], r[2], r[3], r[4], r[5], -float(r[6])) for r in rows]

    async def _postgres(self, file_ids: list[int], words: list[str], limit: int, chunks_in_files: int) -> list[Hit]:
        frequencies, rows = await self._postgres_df(words)
        # candidates are at most the files' own chunks (the planner starts from the smaller side)
        capped = {w: min(df, float(chunks_in_files)) for w, df in frequencies.items()}
        chosen = self.choose(capped, POSTGRES_RANKINGS, per_term=True, total=rows)
        if not chosen:
            return []
        n = max(rows, float(chunks_in_files), 1.0)
        params: dict[str, Any] = {"files": file_ids, "limit": limit, "query": " | ".join(f"'{w}'" for w in chosen)}
        ranks = []
        for i, word in enumerate(chosen):
            df = frequencies[word]
            params[f"w{i}"] = math.log(1 + (n - df + 0.5) / (df + 0.5))  # BM25's IDF
            params[f"t{i}"] = f"'{word}'"
            ranks.append(f":w{i} * ts_rank(search_vector, to_tsquery('simple', :t{i}), 1)")
        stmt = text(
            "SELECT id, file_id, ordinal, location, text, tokens, " + " + ".join(ranks) + " AS score "
            "FROM file_chunks WHERE search_vector @@ to_tsquery('simple', :query) AND file_id = ANY(:files) "
            "ORDER BY score DESC LIMIT :limit"
        )
        async with self.engine.connect() as conn:
            found = (await conn.execute(stmt, params)).all()
        return [Hit(r[0], r[1], r[2], r[3], r[4], r[5], float(r[6])) for r in found]


class VectorIndex:
    """Chunk embeddings per file, loaded once and kept (bounded in bytes, least recently used
    first out). A file's vectors never change after processing; its entry is keyed by the
    file's generation, so a file processed again is loaded again."""

    def __init__(self, engine: AsyncEngine, max_bytes: int) -> None:
        self.engine = engine
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._bytes = 0

    async def _vectors(self, file_id: int, generation: int) -> tuple[np.ndarray, np.ndarray]:
        key = (file_id, generation)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        stmt = (
            select(FileChunk.id, FileChunk.embedding)
            .where(FileChunk.file_id == file_id, FileChunk.embedding.is_not(None))
            .order_by(FileChunk.ordinal)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        ids = np.asarray([r[0] for r in rows], dtype=np.int64)
        matrix = np.vstack([np.frombuffer(r[1] or b"", dtype=np.float32) for r in rows]) if rows else np.zeros((0, 0))
        entry = (ids, matrix.astype(np.float32, copy=False))
        size = ids.nbytes + entry[1].nbytes
        if size <= self.max_bytes:
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                _, (old_ids, old) = self._entries.popitem(last=False)
                self._bytes -= old_ids.nbytes + old.nbytes
        return entry

    async def nearest(self, files: Sequence[tuple[int, int]], query: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """(chunk id, cosine) of the ``limit`` chunks closest to ``query`` among ``files``
        ((file id, generation) pairs)."""
        scored: list[tuple[np.ndarray, np.ndarray]] = []
        for file_id, generation in files:
            ids, matrix = await self._vectors(file_id, generation)
            if len(ids) and matrix.shape[1] == query.shape[0]:
                scored.append((ids, matrix @ query))
        if not scored:
            return []
        ids = np.concatenate([s[0] for s in scored])
        scores = np.concatenate([s[1] for s in scored])
        top = np.argsort(-scores)[:limit] if len(scores) <= limit else np.argpartition(-scores, limit)[:limit]
        top = top[np.argsort(-scores[top])]
        return [(int(ids[i]), float(scores[i])) for i in top]


def fuse(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[int]:
    """Reciprocal rank fusion: ids ordered by the sum of 1 / (k + rank) over the rankings."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda item: -scores[item])
