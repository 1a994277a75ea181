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

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from opentess.files.reader import Reader
from opentess.files.tables import FileChunk

MAX_QUERY_TERMS = 12
# chunks a query may have to score: SQLite walks postings in C (about 1 µs each); PostgreSQL
# ranks each candidate row once per term (about 3 µs each)
SQLITE_POSTINGS = 20_000
POSTGRES_RANKINGS = 6_000
SMALL_SEARCH = 2_000  # SQLite: a search among this many chunks (and postings) runs on the event loop
RARE_COUNT = 200  # PostgreSQL: lexemes its statistics do not list are counted up to this
# PostgreSQL prices a tsvector match at one operator, so on tables of some thousands of chunks
# it prefers reading every row to the GIN index; each match actually costs microseconds (the
# vector is read and decompressed), so searches forbid the sequential scan for their
# transaction (measured at 10k chunks: 30 ms instead of under 1 ms)
INDEX_ONLY = "SET LOCAL enable_seqscan = off"
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
    if value.isascii():
        return value.lower()
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
    def __init__(self, engine: AsyncEngine, reader: Reader | None = None) -> None:
        self.engine = engine
        self.reader = reader if reader is not None else Reader(engine)
        self.postgres = engine.dialect.name == "postgresql"
        self._df = _TTL(STATS_TTL_S)
        self._pg_stats: tuple[float, dict[str, float], float, float] | None = None  # (until, freqs, floor, rows)
        self._sqlite_total: tuple[float, int] | None = None  # (until, chunks)

    # document frequencies -------------------------------------------------------------------------

    async def _sqlite_df(self, words: list[str]) -> dict[str, int]:
        found = {w: v for w in words if (v := self._df.get(w)) is not None}
        missing = [w for w in words if w not in found]
        if missing:
            marks = ", ".join("?" * len(missing))
            rows = await self.reader.fetch(
                f"SELECT term, doc FROM file_chunks_fts_vocab WHERE term IN ({marks})", missing
            )
            counts = {str(term): int(doc) for term, doc in rows}
            for word in missing:
                found[word] = counts.get(word, 0)
                self._df.put(word, found[word])
        return found

    async def _sqlite_chunks(self, at_least: int) -> int:
        """How many chunks there are (cached; counted again when a document frequency shows
        the count is out of date)."""
        cached = self._sqlite_total
        if cached is not None and cached[0] > time.monotonic() and cached[1] >= at_least:
            return cached[1]
        total = int((await self.reader.fetch("SELECT count(*) FROM file_chunks", []))[0][0])
        self._sqlite_total = (time.monotonic() + STATS_TTL_S, total)
        return total

    async def _postgres_stats(self) -> tuple[dict[str, float], float, float]:
        """PostgreSQL's statistics of the tsvector column (ANALYZE keeps them): the most common
        lexemes with the share of rows holding each, the share below which a lexeme is not
        listed, and the table's row count."""
        cached = self._pg_stats
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2], cached[3]
        rows = await self.reader.fetch(
            "SELECT (SELECT reltuples FROM pg_class WHERE relname = 'file_chunks'), "
            "s.most_common_elems::text::text[], s.most_common_elem_freqs FROM (SELECT 1) AS one "
            "LEFT JOIN pg_stats AS s ON s.tablename = 'file_chunks' AND s.attname = 'search_vector'",
            [],
        )
        count, elems, values = rows[0] if rows else (0, None, None)
        freqs: dict[str, float] = {}
        floor = 0.0
        if elems and values:
            freqs = dict(zip(elems, values[: len(elems)], strict=False))
            floor = float(values[len(elems)]) if len(values) > len(elems) else 0.0  # the least listed share
        total = max(float(count or 0), 0.0)
        self._pg_stats = (time.monotonic() + (STATS_TTL_S if freqs else EMPTY_STATS_TTL_S), freqs, floor, total)
        return freqs, floor, total

    async def _postgres_df(self, words: list[str]) -> tuple[dict[str, float], float]:
        """Document frequencies: the column's statistics for the common lexemes; the others,
        rarer than every listed one, are counted up to ``RARE_COUNT`` (bounded work: a few
        index probes) and cached — a count that reaches it is estimated at least that."""
        freqs, floor, rows = await self._postgres_stats()
        found: dict[str, float] = {w: freqs[w] * rows for w in words if w in freqs}
        unlisted = [w for w in words if w not in found]
        cached = {w: float(v) for w in unlisted if (v := self._df.get(w)) is not None}
        missing = [w for w in unlisted if w not in cached]
        if missing:
            counts = [
                f"(SELECT count(*) FROM (SELECT 1 FROM file_chunks WHERE search_vector @@ "
                f"to_tsquery('simple', {_tsquery([w])}) LIMIT {RARE_COUNT}) AS s{i})"
                for i, w in enumerate(missing)
            ]
            row = (await self.reader.fetch("SELECT " + ", ".join(counts), [], setup=INDEX_ONLY))[0]
            for word, count in zip(missing, row, strict=True):
                self._df.put(word, int(count))
                cached[word] = float(count)
        for word, count in cached.items():
            # a lexeme not listed is rarer than every listed one (PostgreSQL's planner
            # estimates it at half the least listed share)
            found[word] = max(count, floor / 2 * rows) if count >= RARE_COUNT else count
        return found, rows

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
            if df <= 0 or df > common:
                continue  # in no chunk at all, or in most of them
            cost = (postings + df) * (len(chosen) + 1) if per_term else postings + df
            if chosen and (cost > budget or len(chosen) >= MAX_QUERY_TERMS):
                break
            chosen.append(word)
            postings += df
        return chosen

    async def refresh_statistics(self) -> None:
        """PostgreSQL: analyze the chunks when their statistics are missing (a new table) or a
        tenth of the rows changed since the last analysis, so that term choice sees current
        document frequencies without waiting for autovacuum (called after a file is stored:
        its cost is spread over the rows that made it necessary)."""
        if not self.postgres:
            return
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT c.reltuples, s.n_mod_since_analyze, "
                        "EXISTS (SELECT 1 FROM pg_stats WHERE tablename = 'file_chunks' "
                        "AND attname = 'search_vector') AS known "
                        "FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
                        "WHERE c.relname = 'file_chunks'"
                    )
                )
            ).first()
        if row is None:
            return
        rows, changed, known = max(float(row[0] or 0), 0.0), float(row[1] or 0), bool(row[2])
        if not known or changed > max(rows, 1.0) * 0.1:
            async with self.engine.begin() as conn:
                # every column: an ANALYZE of chosen columns is cheaper (634 → 445 ms at 75,000
                # chunks) but does not reset the table's count of changed rows, so the next file
                # would find it still over the threshold and analyze again (measured: 1.9
                # documents/s instead of 18)
                await conn.execute(text("ANALYZE file_chunks"))
            self._pg_stats = None

    # searching ---------------------------------------------------------------------------------------

    async def search(self, file_ids: Sequence[int], question: str, limit: int, chunks_in_files: int) -> list[Hit]:
        words = terms(question)
        if not words or not file_ids:
            return []
        if self.postgres:
            return await self._postgres(list(file_ids), words, limit, chunks_in_files)
        return await self._sqlite(list(file_ids), words, limit, chunks_in_files)

    async def _sqlite(self, file_ids: list[int], words: list[str], limit: int, chunks_in_files: int) -> list[Hit]:
        frequencies = await self._sqlite_df(words)
        total = await self._sqlite_chunks(max(frequencies.values(), default=0))
        chosen = self.choose(dict(frequencies), SQLITE_POSTINGS, per_term=False, total=total)
        if not chosen:
            return []
        match = " OR ".join(f'"{w}"' for w in chosen)
        rows = await self.reader.fetch(
            "SELECT c.id, c.file_id, c.ordinal, c.location, c.text, c.tokens, bm25(file_chunks_fts) AS score "
            "FROM file_chunks_fts JOIN file_chunks AS c ON c.id = file_chunks_fts.rowid "
            f"WHERE file_chunks_fts MATCH ? AND c.file_id IN ({', '.join('?' * len(file_ids))}) "
            "ORDER BY score LIMIT ?",
            [match, *file_ids, limit],
            small=chunks_in_files <= SMALL_SEARCH and sum(frequencies[w] for w in chosen) <= SMALL_SEARCH,
        )
        # FTS5's bm25() is lower for better matches
        return [Hit(r[0], r[1], r[2], r[3], r[4], r[5], -float(r[6])) for r in rows]

    async def _postgres(self, file_ids: list[int], words: list[str], limit: int, chunks_in_files: int) -> list[Hit]:
        frequencies, rows = await self._postgres_df(words)
        # Few chunks in the files: start from them (their index), every term is affordable.
        # Otherwise start from the text index — the planner, which prices a match at almost
        # nothing, would rather filter all the files' chunks — with the terms the budget allows.
        few = chunks_in_files * min(len(words), MAX_QUERY_TERMS) <= POSTGRES_RANKINGS
        candidates = {w: min(df, float(chunks_in_files)) for w, df in frequencies.items()} if few else frequencies
        chosen = self.choose(candidates, POSTGRES_RANKINGS, per_term=True, total=rows)
        if not chosen:
            return []
        n = max(rows, float(chunks_in_files), 1.0)
        # The query's terms are written into the statement, not bound: a prepared statement
        # reused with a bound tsquery gets a generic plan, which cannot know the terms are rare
        # and scans every chunk. The terms are letters and digits only (``terms``), quoted as
        # SQL literals all the same.
        ranks = []
        for word in chosen:
            df = frequencies[word]
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))  # BM25's IDF
            ranks.append(f"{idf:.6f} * ts_rank(search_vector, to_tsquery('simple', {_tsquery([word])}), 1)")
        match = f"search_vector @@ to_tsquery('simple', {_tsquery(chosen)})"
        if few:
            source = f"file_chunks WHERE {match} AND file_id = ANY($1::bigint[])"
        else:  # a materialized CTE is planned alone: on the text index
            source = (
                f"(WITH hits AS MATERIALIZED (SELECT * FROM file_chunks WHERE {match}) "
                "SELECT * FROM hits WHERE file_id = ANY($1::bigint[])) AS hits"
            )
        found = await self.reader.fetch(
            "SELECT id, file_id, ordinal, location, text, tokens, " + " + ".join(ranks) + " AS score "
            f"FROM {source} ORDER BY score DESC LIMIT $2",
            [file_ids, limit],
            setup=INDEX_ONLY,
        )
        return [Hit(r[0], r[1], r[2], r[3], r[4], r[5], float(r[6])) for r in found]


def _tsquery(words: list[str]) -> str:
    """The SQL literal of a tsquery matching any of ``words`` (letters and digits only)."""
    return _literal(" | ".join(f"'{w}'" for w in words))


def _literal(value: str) -> str:
    """A SQL string literal (``'`` doubled)."""
    return "'" + value.replace("'", "''") + "'"


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
