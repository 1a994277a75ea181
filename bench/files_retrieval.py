"""The knowledge step's latency at 1k, 10k and 100k chunks: the context source of the files
capability (opentess.files.knowledge) called as the execution service calls it, for an agent
whose linked files hold that many chunks, with a different question each time.

Chunks are written straight to the database (extraction is measured apart, by the ingestion
scenario): text drawn from a 30,000-word vocabulary with a Zipf distribution, about 200 words a
chunk, as long manuals are; questions are a few words of one chunk (the rarer ones) among
common words ("what is the … of …")."""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opentess.agents import AgentSpec
from opentess.auth import Principal
from opentess.db.engine import make_engine, migrate
from opentess.executions.context import ContextDraft
from opentess.executions.request import ExecutionRequest
from opentess.files.knowledge import KnowledgeSource
from opentess.files.processing import estimate_tokens
from opentess.files.search import fold
from opentess.files.service import FilesService
from opentess.files.storage import new_key
from opentess.files.store import ChunkRow
from opentess.limits import Limits
from opentess.settings import Settings
from opentess.store import Store, close_store

VOCABULARY = 30_000
WORDS_PER_CHUNK = 200
CHUNKS_PER_FILE = 1000
COMMON = ["what", "is", "the", "of", "for", "and", "how", "does", "in", "to"]


@dataclass
class Latencies:
    chunks: int
    index: str  # memory (small knowledge) or database
    p50_ms: float
    p95_ms: float
    retrieved: float  # excerpts per call, on average


class Corpus:
    def __init__(self, seed: int = 11) -> None:
        self.rng = np.random.default_rng(seed)
        ranks = np.arange(1, VOCABULARY + 1)
        self.p = (1 / ranks) / (1 / ranks).sum()
        self.words = np.array([f"w{n}" for n in range(VOCABULARY)])

    def chunk_words(self, count: int) -> np.ndarray:
        return self.rng.choice(VOCABULARY, size=(count, WORDS_PER_CHUNK), p=self.p)

    def text(self, ids: np.ndarray) -> str:
        return " ".join(self.words[ids])

    def question(self, ids: np.ndarray, rng: random.Random) -> str:
        rare = sorted(set(int(i) for i in ids), reverse=True)[:6]
        picked = [str(self.words[i]) for i in rng.sample(rare, 3)]
        return f"{COMMON[0]} {COMMON[1]} {COMMON[2]} {picked[0]} {COMMON[3]} {picked[1]} {COMMON[4]} {picked[2]}?"


async def _add_files(files: FilesService, workspace_id: int, agent_id: int, corpus: Corpus, chunks: int) -> list[str]:
    """``chunks`` more chunks in files of 1,000, linked to the agent; returns some questions."""
    rng = random.Random(chunks)
    questions: list[str] = []
    for start in range(0, chunks, CHUNKS_PER_FILE):
        count = min(CHUNKS_PER_FILE, chunks - start)
        words = corpus.chunk_words(count)
        texts = [corpus.text(row) for row in words]
        record = await files.store.create(
            workspace_id=workspace_id, user_id=None, filename=f"manual-{start}.txt", size=sum(map(len, texts)),
            content_type="text/plain", storage_key=new_key(), process=True,
        )  # fmt: skip
        rows = [ChunkRow(f"lines {n}", t, estimate_tokens(t), fold(t)) for n, t in enumerate(texts)]
        values = {"kind": "text", "chars": sum(map(len, texts)), "tokens": sum(r.tokens for r in rows)}
        await files.store.complete(record.id, record.generation, rows, values)
        await files.store.link(agent_id, [record.id])
        questions += [corpus.question(words[rng.randrange(count)], rng) for _ in range(20)]
    await files.fulltext.refresh_statistics()
    return questions


async def _measure(
    source: KnowledgeSource, draft_for: object, questions: list[str], calls: int
) -> tuple[list[float], int]:
    times: list[float] = []
    excerpts = 0
    for n in range(calls):
        draft = draft_for(questions[n % len(questions)])  # type: ignore[operator]
        started = time.perf_counter()
        await source.contribute(draft)
        times.append((time.perf_counter() - started) * 1000)
        excerpts += len(draft.contributions["knowledge"]["chunks"])
    return times, excerpts


async def measure(database_url: str | None, sizes: list[int], calls: int) -> list[Latencies]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=database_url, files_workspace_max_files=1_000_000,
                            files_workspace_max_bytes=10**15, files_agent_max_files=100_000)  # fmt: skip
        engine = make_engine(settings)
        await migrate(engine)
        store = Store(engine)
        files = FilesService(settings, engine)
        try:
            user, workspace = await store.users.create(f"bench-{time.time_ns()}@example.com")
            agent = await store.agents.create(AgentSpec(title="Manuals", instructions="Answer."), workspace.id)
            source = KnowledgeSource(files)
            principal = Principal(0, user.id, workspace.id, Limits())

            def draft_for(question: str) -> ContextDraft:
                turns = [{"role": "user", "content": question}]
                draft = ContextDraft(principal, agent, ExecutionRequest(turns, {}), {}, settings.default_model,
                                     "no-tools", None, system=["Answer."], turns=turns)  # fmt: skip
                return draft

            corpus = Corpus()
            results: list[Latencies] = []
            questions: list[str] = []
            have = 0
            for size in sizes:
                questions += await _add_files(files, workspace.id, agent.id, corpus, size - have)
                have = size
                files._linked.clear()
                threshold = settings.files_memory_index_chunks
                # small knowledge is searched in memory; measure the database's search too
                for memory in (True, False) if size <= threshold else (False,):
                    settings.files_memory_index_chunks = threshold if memory else 0
                    await _measure(source, draft_for, questions, min(20, calls))  # warm the caches
                    times, excerpts = await _measure(source, draft_for, questions[::-1], calls)
                    times.sort()
                    p95 = times[int(len(times) * 0.95) - 1]
                    index = "memory" if memory else "database"
                    results.append(Latencies(size, index, statistics.median(times), p95, excerpts / calls))
                settings.files_memory_index_chunks = threshold
            return results
        finally:
            await files.aclose()
            await close_store(store)


def run(database_url: str | None, sizes: list[int], calls: int) -> list[Latencies]:
    """On PostgreSQL, in a database of its own (dropped afterwards): the chunks of earlier runs
    or other programs would be searched around, and counted in the statistics."""
    if database_url and database_url.startswith("postgresql"):
        from bench import targets

        with targets.fresh_database(database_url) as fresh:
            return asyncio.run(measure(fresh, sizes, calls))
    return asyncio.run(measure(database_url, sizes, calls))
