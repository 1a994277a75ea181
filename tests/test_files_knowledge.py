"""Knowledge at run time, on SQLite (FTS5) and PostgreSQL (tsvector + GIN): the chunk that holds
the answer is found in a large file and sent within the budget, labelled for citing; small files
go whole; files stored without processing are extracted on first use; failed ones are skipped
and said so; with an embedding model the retrieval is hybrid and finds what words alone miss."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opentess.files.search import FullText, fuse, terms
from opentess.settings import ModelConfig
from tests.support import files_docs as docs
from tests.support.fake_upstream import FakeUpstream
from tests.support.files_embeddings import FakeEmbeddings
from tests.support.files_env import FilesEnv, database, files_env, system_prompt, upload, wait_processed

ANSWER = "The emergency shutdown password for turbine 7 is QUASAR-1198."
QUESTION = "What is the emergency shutdown password for turbine 7?"
BUDGET = 600


def _manual() -> bytes:
    paragraphs = docs.filler(400)
    paragraphs.insert(263, f"Section 263b. {ANSWER} Keep it in the sealed envelope of the shift supervisor.")
    return "\n\n".join(paragraphs).encode()


@pytest.fixture(scope="module", params=["sqlite-database", "sqlite-memory", "postgres-database", "postgres-memory"])
def env(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FilesEnv]:
    """Each database, with retrieval in its own index (FTS5, tsvector + GIN) and in memory
    (small knowledge)."""
    backend, index = request.param.split("-")
    overrides: dict[str, Any] = {"files_context_tokens": BUDGET, "files_whole_file_tokens": 150, "files_wait_s": 60,
                                 "files_memory_index_chunks": 0 if index == "database" else 5000}  # fmt: skip
    with (
        database(backend) as url,
        files_env(tmp_path_factory.mktemp("knowledge"), upstream.url, url, **overrides) as running,
    ):
        yield running


@pytest.fixture
def http(env: FilesEnv) -> Iterator[httpx.Client]:
    with env.client() as client:
        yield client


def _ask(http: httpx.Client, agent_id: int, question: str = QUESTION, **extra: Any) -> dict[str, Any]:
    body = {"language": "en", "messages": [{"role": "user", "content": question}], **extra}
    execution = http.post(f"/agents/{agent_id}/execute?waitExecution=true", json=body).json()["responses"][0]
    assert execution["status"] == "succeeded", execution
    knowledge: dict[str, Any] = http.get(f"/agent-responses/{execution['id']}").json()["knowledge"]
    return knowledge


def _agent(http: httpx.Client, title: str) -> int:
    questions = [{"type": "select", "name": "model", "options": ["fake-gpt"]}, {"type": "text", "name": "language"}]
    spec = {"title": title, "instructions": "Answer from the files.", "questions": questions}
    return int(http.post("/agents", json=spec).json()["id"])


def test_the_chunk_with_the_answer_is_found_in_a_large_file(
    env: FilesEnv, http: httpx.Client, upstream: FakeUpstream
) -> None:
    manual = upload(http, "plant-manual.txt", _manual()).json()
    done = wait_processed(http, manual["id"])
    assert done["status"] == "completed" and done["chunks"] > 150
    agent_id = _agent(http, "Plant")
    http.post(f"/agents/{agent_id}/files", json={"file_ids": [manual["id"]]})
    knowledge = _ask(http, agent_id)
    prompt = system_prompt(upstream.last)
    assert "QUASAR-1198" in prompt
    index = "memory" if env.world.settings.files_memory_index_chunks else "database"
    assert knowledge["retrieval"] == f"full-text ({index})" and knowledge["budget"] == BUDGET
    assert knowledge["tokens"] <= BUDGET and len(prompt) < BUDGET * 4 + 1000  # not the whole manual
    first = knowledge["chunks"][0]
    assert first["file_id"] == manual["id"] and f"[plant-manual.txt, {first['location']}]" in prompt
    assert prompt.index("QUASAR-1198") < prompt.index("[plant-manual.txt", prompt.index("QUASAR-1198") - 2000) + 2000
    assert knowledge["files"] == [{"id": manual["id"], "filename": "plant-manual.txt", "used": "excerpts",
                                   "chunks": len(knowledge["chunks"])}]  # fmt: skip
    assert knowledge["available"] == 1


def test_full_text_ranks_the_answer_first(env: FilesEnv, http: httpx.Client) -> None:
    """The search itself, on this database: the answer's chunk is the best hit."""
    import asyncio

    from opentess.db.engine import make_engine

    manual = upload(http, "manual-2.txt", _manual()).json()
    wait_processed(http, manual["id"])

    async def search() -> list[str]:
        engine = make_engine(env.world.settings)
        fulltext = FullText(engine)
        try:
            hits = await fulltext.search([manual["id"]], QUESTION, 5, chunks_in_files=400)
            return [h.text for h in hits]
        finally:
            await fulltext.reader.aclose()
            await engine.dispose()

    texts = asyncio.run(search())
    assert "QUASAR-1198" in texts[0]


def test_small_files_go_whole_and_large_ones_as_excerpts(
    env: FilesEnv, http: httpx.Client, upstream: FakeUpstream
) -> None:
    agent_id = _agent(http, "Mixed")
    small = upload(http, "contacts.txt", b"The duty engineer on turbine 7 is Ana Lima, extension 4471.").json()
    large = upload(http, "plant-manual.txt", _manual()).json()
    for f in (small, large):
        wait_processed(http, f["id"])
    http.post(f"/agents/{agent_id}/files", json={"file_ids": [small["id"], large["id"]]})
    knowledge = _ask(http, agent_id, "Who is the duty engineer on turbine 7 and the shutdown password?")
    prompt = system_prompt(upstream.last)
    assert "[contacts.txt, whole file]\nThe duty engineer on turbine 7 is Ana Lima" in prompt
    assert "QUASAR-1198" in prompt
    used = {f["filename"]: f["used"] for f in knowledge["files"]}
    assert used == {"contacts.txt": "whole", "plant-manual.txt": "excerpts"}


def test_files_stored_without_processing_are_extracted_on_first_use(
    env: FilesEnv, http: httpx.Client, upstream: FakeUpstream
) -> None:
    """A call's `file_ids` naming a file stored with process=false: the call waits for its
    extraction, then the text is in the context."""
    stored = upload(http, "late.pdf", docs.pdf([ANSWER]), process="false").json()
    assert stored["status"] == "completed" and not stored["processed"]
    knowledge = _ask(http, env.world.agent_id, file_ids=[stored["id"]])
    assert "QUASAR-1198" in system_prompt(upstream.last)
    assert knowledge["files"][0]["used"] == "whole"
    assert http.get(f"/files/{stored['id']}").json()["processed"] is True


def test_failed_files_are_skipped_and_said_so(env: FilesEnv, http: httpx.Client, upstream: FakeUpstream) -> None:
    agent_id = _agent(http, "Skips")
    broken = upload(http, "scan.pdf", docs.blank_pdf(2)).json()
    good = upload(http, "good.txt", ANSWER.encode()).json()
    wait_processed(http, broken["id"])
    wait_processed(http, good["id"])
    http.post(f"/agents/{agent_id}/files", json={"file_ids": [broken["id"], good["id"]]})
    knowledge = _ask(http, agent_id)
    assert [s["id"] for s in knowledge["skipped"]] == [broken["id"]]
    assert knowledge["skipped"][0]["status"] == "failed" and "no text layer" in knowledge["skipped"][0]["reason"]
    assert "QUASAR-1198" in system_prompt(upstream.last)


def test_an_agent_without_files_adds_nothing(env: FilesEnv, http: httpx.Client, upstream: FakeUpstream) -> None:
    agent_id = _agent(http, "Plain")
    execution = http.post(
        f"/agents/{agent_id}/execute?waitExecution=true",
        json={"language": "en", "messages": [{"role": "user", "content": "hi"}]},
    ).json()["responses"][0]
    assert http.get(f"/agent-responses/{execution['id']}").json()["knowledge"] is None
    assert "## Knowledge" not in system_prompt(upstream.last)


def test_query_terms_are_chosen_rarest_first_within_the_budget() -> None:
    frequencies = {"the": 90_000.0, "turbine": 4_000.0, "password": 900.0, "quasar": 3.0, "emergency": 2_500.0}
    assert FullText.choose(frequencies, 20_000, per_term=False) == ["quasar", "password", "emergency", "turbine"]
    assert FullText.choose(frequencies, 6_000, per_term=True) == ["quasar", "password"]
    assert FullText.choose({"the": 90_000.0}, 1_000, per_term=False) == ["the"]  # at least one
    assert FullText.choose(frequencies, 20_000, per_term=False, total=100_000) == ["quasar", "password", "emergency",
                                                                                   "turbine"]  # fmt: skip
    assert FullText.choose({"the": 60.0, "car": 1.0}, 1_000, per_term=False, total=100) == ["car"]
    assert terms("Qual é o preço do CAFÉ? A x-200!") == ["qual", "preco", "do", "cafe", "200"]
    assert fuse([[1, 2, 3], [3, 4, 1]]) == [1, 3, 2, 4]


# hybrid ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embeddings() -> Iterator[FakeEmbeddings]:
    server = FakeEmbeddings().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hybrid(
    request: pytest.FixtureRequest,
    upstream: FakeUpstream,
    embeddings: FakeEmbeddings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FilesEnv]:
    from tests.support.world import make_settings

    models = dict(make_settings(tmp_path_factory.mktemp("m"), upstream.url).models)
    models["embedder"] = ModelConfig(
        provider="openai", kind="embedding", base_url=f"{embeddings.url}/v1", upstream_model="embed-test"
    )
    overrides = {"models": models, "files_embedding_model": "embedder", "files_context_tokens": 700,
                 "files_whole_file_tokens": 50, "files_wait_s": 60}  # fmt: skip
    with (
        database(request.param) as url,
        files_env(tmp_path_factory.mktemp("hybrid"), upstream.url, url, **overrides) as running,
    ):
        yield running


def test_hybrid_retrieval_finds_what_words_miss(
    hybrid: FilesEnv, upstream: FakeUpstream, embeddings: FakeEmbeddings
) -> None:
    """ "automobile" is in no chunk; the vectors know it is a car. Fused by rank with the
    full-text ranking, the chunk about the car's price reaches the model."""
    paragraphs = docs.filler(120)
    paragraphs.insert(77, "Fleet note. The red car parked at the west gate is priced at 18,400 euros.")
    with hybrid.client() as http:
        fleet = upload(http, "fleet.txt", "\n\n".join(paragraphs).encode()).json()
        assert wait_processed(http, fleet["id"])["status"] == "completed"
        assert embeddings.requests and embeddings.requests[0]["model"] == "embed-test"
        agent_id = _agent(http, "Fleet")
        http.post(f"/agents/{agent_id}/files", json={"file_ids": [fleet["id"]]})
        knowledge = _ask(http, agent_id, "How much does the automobile cost?")
        assert knowledge["retrieval"] == "hybrid (memory)"
        assert "18,400 euros" in system_prompt(upstream.last)
        embeddings.fail = True  # the embedding upstream is down: full text still answers
        try:
            degraded = _ask(http, agent_id, "What is the price of the red car at the west gate?")
        finally:
            embeddings.fail = False
        assert degraded["retrieval"] == "full-text (memory; embeddings unavailable)"
        assert "18,400 euros" in system_prompt(upstream.last)
