"""Extracted text → chunks: pieces of at most ``max_chars`` characters that end at natural
boundaries (a page, a slide, a paragraph, a line, a sentence), each labelled with where it comes
from ("page 3", "pages 3–4", "sheet Sales, rows 2–41") so the model can cite it.

Chunks do not overlap: they end at boundaries, and a whole file is its chunks joined again.
Tabular chunks (CSV, sheets) repeat their table's header row, so each can be read alone."""

from __future__ import annotations

from dataclasses import dataclass, field

PLURALS = {"page": "pages", "slide": "slides", "line": "lines", "row": "rows", "paragraph": "paragraphs"}
JOINERS = {"page": "\n\n", "slide": "\n\n", "paragraph": "\n\n", "line": "\n", "row": "\n"}
_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


@dataclass(slots=True)
class Segment:
    """A unit of a document: page 3, slide 2, line 17, row 5 of a sheet."""

    unit: str
    number: int
    text: str
    group: str = ""  # e.g. "sheet Sales": chunks never span two groups


@dataclass(slots=True)
class Chunk:
    location: str
    text: str


@dataclass
class _Open:
    group: str
    unit: str
    header: str
    first: int = 0
    last: int = 0
    parts: list[str] = field(default_factory=list)
    size: int = 0


def label(unit: str, first: int, last: int, group: str = "") -> str:
    where = f"{unit} {first}" if first == last else f"{PLURALS.get(unit, unit)} {first}–{last}"
    return f"{group}, {where}" if group else where


def split_text(text: str, max_chars: int) -> list[str]:
    """Pieces of at most ``max_chars``, cut at the best boundary in the second half of each."""
    pieces: list[str] = []
    rest = text
    while len(rest) > max_chars:
        window = rest[:max_chars]
        cut = -1
        for mark in _BREAKS:
            at = window.rfind(mark, max_chars // 2)
            if at > 0:
                cut = at + len(mark)
                break
        if cut <= 0:
            cut = max_chars
        piece = rest[:cut].strip()
        if piece:
            pieces.append(piece)
        rest = rest[cut:]
    if rest.strip():
        pieces.append(rest.strip())
    return pieces


def chunk(segments: list[Segment], max_chars: int, headers: dict[str, str] | None = None) -> list[Chunk]:
    """Pack segments into chunks of at most ``max_chars`` (a header row counts toward it)."""
    headers = headers or {}
    chunks: list[Chunk] = []
    current: _Open | None = None

    def close() -> None:
        nonlocal current
        if current is not None and current.parts:
            joiner = JOINERS.get(current.unit, "\n")
            body = joiner.join(current.parts)
            text = f"{current.header}\n{body}" if current.header else body
            chunks.append(Chunk(label(current.unit, current.first, current.last, current.group), text))
        current = None

    for segment in segments:
        # lines keep their indentation (code, JSON); other units are trimmed
        text = segment.text.rstrip() if segment.unit == "line" else segment.text.strip()
        if not text.strip():
            continue
        header = headers.get(segment.group, "")
        room = max(max_chars - (len(header) + 1 if header else 0), max_chars // 4)
        joiner = JOINERS.get(segment.unit, "\n")
        if current is not None and (
            current.group != segment.group
            or current.unit != segment.unit
            or current.size + len(joiner) + len(text) > room
        ):
            close()
        if len(text) > room:
            close()
            for piece in split_text(text, room):
                number = segment.number
                current = _Open(segment.group, segment.unit, header, number, number, [piece], len(piece))
                close()
            continue
        if current is None:
            current = _Open(segment.group, segment.unit, header, segment.number)
            current.parts.append(text)
            current.size = len(text)
        else:
            current.parts.append(text)
            current.size += len(joiner) + len(text)
        current.last = segment.number
    close()
    return chunks
