"""Knowledge in the model's context: the agent's linked files, the files a call names
(``file_ids``) and those the conversation's earlier turns named, as a section of the system
message.

- Files not processed yet are processed now (a file stored with ``process=false`` is extracted
  on first use) and waited for, up to ``files_wait_s``; a file that failed, or is still being
  processed then, is left out and recorded as skipped.
- When every file fits the budget, each goes in whole. Otherwise the chunks most relevant to
  the latest user message are retrieved (opentess.files.search; small knowledge in memory,
  opentess.files.memory) and go in by rank until the budget is full; a retrieved chunk of a
  small file (``files_whole_file_tokens``) brings its whole file instead.
- The budget is ``files_context_tokens`` (or the model's entry in
  ``files_model_context_tokens``), at most half the context of a model that declares one, and
  never more than ``max_input_chars`` leaves after the instructions, the history and the new
  messages: knowledge never makes a call too large.
- Each excerpt is labelled ``[file name, position]`` so the model can cite it; what was used is
  recorded on the execution (``context.knowledge``, shown as ``knowledge`` on
  ``GET /agent-responses/{id}``), including the call's ``file_ids`` for the conversation's
  later turns."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from opentess.db.models import Execution
from opentess.errors import InvalidInput, UpstreamError
from opentess.executions.context import ContextDraft
from opentess.files.search import Hit, fuse, terms
from opentess.files.store import COMPLETED, WAITING, FileRecord

if TYPE_CHECKING:
    from opentess.files.service import FilesService

log = logging.getLogger("opentess.files")
HEADER = (
    "## Knowledge\n"
    "Excerpts from files you can use to answer. When you use one, cite it by its label in "
    "brackets, e.g. [report.pdf, page 3]."
)
CANDIDATES = 50  # chunks each ranking proposes


@dataclass
class _Selection:
    entries: list[tuple[str, str]] = field(default_factory=list)  # (label, text) in context order
    files: dict[int, dict[str, Any]] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0


class KnowledgeSource:
    """The files capability's context source (after the instructions)."""

    name = "knowledge"

    def __init__(self, files: FilesService) -> None:
        self.files = files
        self.settings = files.settings
        self._views: dict[int, tuple[list[FileRecord], _View]] = {}

    async def contribute(self, draft: ContextDraft) -> None:
        asked = list(draft.request.file_ids)
        linked = await self.files.linked(draft.agent.id)
        inherited = await self._inherited(draft)
        if not asked and not linked and not inherited:
            return  # the common case costs one cache lookup
        carried: list[int] = []
        if asked or inherited:
            workspace = draft.principal.workspace_id
            found = await self.files.store.many(list(dict.fromkeys(asked + inherited)), workspace)
            missing = [str(i) for i in asked if i not in found]
            if missing:
                raise InvalidInput(
                    {"file_ids": [f"The selected file_ids is invalid: no file {', '.join(missing)} in this workspace."]}
                )
            carried = [i for i in dict.fromkeys(asked + inherited) if i in found]
            files = list({f.id: f for f in [*(found[i] for i in carried), *linked]}.values())
            view = _View(await self._processed(files))
        else:
            view = self._linked_view(linked)
            if view.pending:
                view = _View(await self._processed(view.files))
        budget = self._budget(draft)
        selection, how = await self._select(view, draft.input_text, budget)
        if selection.entries:
            draft.system.append(
                HEADER + "\n\n" + "\n\n".join(f"[{label}]\n{body}" for label, body in selection.entries)
            )
        draft.record(
            self.name,
            {
                "file_ids": carried,
                "files": list(selection.files.values()),  # the files the context used
                "available": len(view.ready),
                "chunks": selection.chunks,
                "skipped": view.skipped,
                "retrieval": how,
                "tokens": selection.tokens,
                "budget": budget,
            },
        )

    def _linked_view(self, linked: list[FileRecord]) -> _View:
        """The view of an agent's files, computed once per cached list (the cache hands out the
        same list for a second)."""
        memo = self._views.get(id(linked))
        if memo is not None and memo[0] is linked:
            return memo[1]
        if len(self._views) > 1000:
            self._views.clear()
        view = _View(linked)
        self._views[id(linked)] = (linked, view)
        return view

    async def _inherited(self, draft: ContextDraft) -> list[int]:
        """The files the conversation's earlier turns used (each turn records the ones it
        carries, so the latest turn's record is enough)."""
        conversation = draft.conversation
        if conversation is None or not conversation.execution_ids:
            return []
        latest = max(conversation.execution_ids)
        async with self.files.store.engine.connect() as conn:
            context = (await conn.execute(select(Execution.context).where(Execution.id == latest))).scalar()
        recorded = (context or {}).get(self.name) or {}
        return [int(i) for i in recorded.get("file_ids", []) if isinstance(i, int)]

    async def _processed(self, files: list[FileRecord]) -> list[FileRecord]:
        """The files again once those not processed yet are, or ``files_wait_s`` has passed."""
        first_use = [f.id for f in files if f.status == COMPLETED and not f.processed]
        if first_use:
            await self.files.store.request_processing(first_use)
        pending = {f.id for f in files if f.status == WAITING} | set(first_use)
        if not pending:
            return files
        fresh = await self.files.wait_for(pending, self.settings.files_wait_s)
        return [fresh.get(f.id, f) for f in files if f.id in fresh or f.id not in pending]

    def _budget(self, draft: ContextDraft) -> int:
        settings = self.settings
        tokens = settings.files_model_context_tokens.get(draft.model)
        if tokens is None:
            tokens = settings.files_context_tokens
            context_length = getattr(self.files.models.config(draft.model).options, "context_length", None)
            if isinstance(context_length, int):
                tokens = min(tokens, context_length // 2)
        used = sum(len(s) for s in draft.system) + sum(len(m["content"]) for m in draft.history + draft.turns)
        room = (settings.max_input_chars - used - len(HEADER) - 4) // 4
        return max(0, min(tokens, room))

    async def _select(self, view: _View, question: str, budget: int) -> tuple[_Selection, str]:
        selection = _Selection()
        ready = view.ready
        if not ready or budget <= 0:
            return selection, "none"
        if view.cost <= budget:
            for f in ready:
                await self._whole(selection, f)
            return selection, "whole"
        hits, how = await self._retrieve(view, question)
        by_id = view.by_id
        small = self.settings.files_whole_file_tokens
        for hit in hits:
            record = by_id[hit.file_id]
            if record.id in selection.files and selection.files[record.id]["used"] == "whole":
                continue
            if (record.tokens or 0) <= small:
                if selection.tokens + _cost(record) <= budget:
                    await self._whole(selection, record)
                continue
            cost = hit.tokens + len(record.filename) // 4 + 8
            if selection.tokens + cost > budget:
                continue
            selection.entries.append((f"{record.filename}, {hit.location}", hit.text))
            selection.tokens += cost
            selection.chunks.append({"file_id": record.id, "chunk_id": hit.chunk_id, "location": hit.location})
            entry = selection.files.setdefault(record.id, _used(record, "excerpts"))
            entry["chunks"] += 1
        return selection, how

    async def _whole(self, selection: _Selection, record: FileRecord) -> None:
        text = await self.files.whole_text(record)
        selection.entries.append((f"{record.filename}, whole file", text))
        selection.tokens += _cost(record)
        selection.files[record.id] = _used(record, "whole")

    async def retrieve(self, ready: list[FileRecord], question: str) -> tuple[list[Hit], str]:
        """The chunks of these files most relevant to ``question``, best first, and how they were
        found (the agent's ``knowledge_search`` tool uses this too)."""
        return await self._retrieve(_View(ready), question)

    async def _retrieve(self, view: _View, question: str) -> tuple[list[Hit], str]:
        ready = view.ready
        if view.chunks <= self.settings.files_memory_index_chunks:  # small knowledge: in memory
            knowledge = await self.files.memory.knowledge(view.key)
            text_hits = knowledge.search(terms(question), CANDIDATES)
            where = "memory"
        else:
            text_hits = await self.files.fulltext.search([f.id for f in ready], question, CANDIDATES, view.chunks)
            where = "database"
        embedder = self.files.embedder
        embedded = [(f.id, f.generation) for f in ready if f.embedding_model is not None]
        if embedder is None or not embedded or not question.strip():
            return text_hits, f"full-text ({where})"
        try:
            query = (await embedder.embed([question]))[0]
        except UpstreamError as exc:
            log.warning("no query embedding (%s): full-text retrieval only", exc)
            return text_hits, f"full-text ({where}; embeddings unavailable)"
        near = await self.files.vectors.nearest(embedded, query, CANDIDATES)
        order = fuse([[h.chunk_id for h in text_hits], [chunk_id for chunk_id, _ in near]])
        known = {h.chunk_id: h for h in text_hits}
        extra = await self.files.chunks([i for i in order if i not in known])
        known.update(extra)
        return [known[i] for i in order if i in known], f"hybrid ({where})"


class _View:
    """What the knowledge of one call is made of: its files, those ready, those skipped (with
    why), and what selection needs of them."""

    __slots__ = ("by_id", "chunks", "cost", "files", "key", "pending", "ready", "skipped")

    def __init__(self, files: list[FileRecord]) -> None:
        self.files = files
        self.ready = [f for f in files if f.ready]
        self.pending = any(f.status == WAITING or (f.status == COMPLETED and not f.processed) for f in files)
        self.skipped = [
            {
                "id": f.id,
                "filename": f.filename,
                "status": f.status,
                "reason": f.error if f.status != WAITING else "still being processed",
            }
            for f in files
            if not f.ready
        ]
        self.by_id = {f.id: f for f in self.ready}
        self.cost = sum(_cost(f) for f in self.ready)
        self.chunks = sum(f.chunks for f in self.ready)
        self.key = tuple((f.id, f.generation) for f in self.ready)


def _cost(record: FileRecord) -> int:
    """A whole file's tokens in the context, its label included."""
    return (record.tokens or 0) + len(record.filename) // 4 + 8


def _used(record: FileRecord, how: str) -> dict[str, Any]:
    return {"id": record.id, "filename": record.filename, "used": how, "chunks": 0}
