"""Extraction of every supported format from real generated documents, the type sniffed from the
content (never the name), the limits (pages, characters, time, memory, zip bombs), and the
chunks with the labels the model cites."""

from __future__ import annotations

import asyncio
import io
import secrets
import zipfile
from pathlib import Path
from typing import Any

import pytest

from opentess.files.chunking import Segment, chunk, split_text
from opentess.files.extract import ExtractionError
from opentess.files.extraction import ExtractionPool
from opentess.files.worker import handle
from tests.support import files_docs as docs

PHRASE = "The reactor coolant pressure limit is 155 bar."
ARTICLE = "\n\n".join(
    [
        "Maintenance bulletin for the northern plant, issued by the operations team after the spring review.",
        PHRASE,
        "Inspections happen every quarter and cover valves, pumps, seals and the control room instruments.",
        "Questions go to the duty engineer, whose number is posted at the entrance of building C.",
    ]
)


def _extract(tmp_path: Path, name: str, data: bytes, **limits: int) -> dict[str, Any]:
    path = tmp_path / "upload.bin"  # stored under a generated name, as opentess stores files
    path.write_bytes(data)
    request = {"path": str(path), "filename": name, "content_type": "", "max_pages": 100, "max_chars": 1_000_000,
               "chunk_chars": 1200, **limits}  # fmt: skip
    return handle(request)


def _text(result: dict[str, Any]) -> str:
    return "\n".join(text for _, text in result["chunks"])


@pytest.mark.parametrize(
    ("name", "make", "kind", "location"),
    [
        ("report.pdf", lambda: docs.pdf(["Cover page", PHRASE]), "pdf", "pages 1–2"),
        ("report.docx", lambda: docs.docx(["Intro.", PHRASE], [["Part", "Qty"], ["valve", "4"]]), "docx", "paragraphs"),
        ("deck.pptx", lambda: docs.pptx([("Intro", "Welcome"), ("Limits", PHRASE)]), "pptx", "slides 1–2"),
        ("limits.csv", lambda: f"topic,fact\nsafety,{PHRASE}\n".encode(), "csv", "row 2"),
        ("notes.md", lambda: f"# Notes\n\n{PHRASE}\n".encode(), "markdown", "lines 1–3"),
        ("notes.txt", lambda: f"{PHRASE}\n".encode("utf-16"), "text", "line 1"),
        ("notes.txt", lambda: f"Caf\xe9 menu. {PHRASE}\n".encode("cp1252"), "text", "line 1"),
        ("data.json", lambda: docs.json_doc({"limits": {"pressure": PHRASE}}), "json", "lines 1–5"),
        ("post.html", lambda: docs.html("Bulletin", ARTICLE), "html", "lines"),
    ],
)
def test_each_format_gives_its_text(tmp_path: Path, name: str, make: Any, kind: str, location: str) -> None:
    result = _extract(tmp_path, name, make())
    assert result["ok"], result
    assert result["kind"] == kind
    assert PHRASE in _text(result)
    assert result["chunks"][0][0].startswith(location)


def test_spreadsheets_keep_their_sheets_and_header_rows(tmp_path: Path) -> None:
    data = docs.xlsx(
        {
            "Plants": [["plant", "limit"], ["north", PHRASE], ["south", "160 bar"]],
            "Staff": [["name", "role"], ["Ana", "duty engineer"]],
        }
    )
    result = _extract(tmp_path, "book.xlsx", data)
    assert result["kind"] == "xlsx" and result["pages"] == 2
    assert result["chunks"] == [
        ["sheet Plants, rows 2–3", f"plant | limit\nnorth | {PHRASE}\nsouth | 160 bar"],
        ["sheet Staff, row 2", "name | role\nAna | duty engineer"],
    ]


def test_html_keeps_the_article_and_drops_the_boilerplate(tmp_path: Path) -> None:
    text = _text(_extract(tmp_path, "page.html", docs.html("Bulletin", ARTICLE)))
    assert PHRASE in text and "Copyright 2026" not in text


def test_the_content_decides_the_type_not_the_name(tmp_path: Path) -> None:
    assert _extract(tmp_path, "looks-like.txt", docs.pdf([PHRASE]))["kind"] == "pdf"
    assert _extract(tmp_path, "looks-like.pdf", docs.docx([PHRASE]))["kind"] == "docx"
    assert _extract(tmp_path, "looks-like.xlsx", f"{PHRASE}\n".encode())["kind"] == "text"
    assert _extract(tmp_path, "image.pdf", docs.PNG)["error"].startswith("The file is image/png")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (docs.ELF, "application/x-executable"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1000), "Legacy Microsoft Office"),
        (b"\x00\x01\x02\x03binary\x00\x00" * 100, "not a document opentess can read"),
        (docs.blank_pdf(2), "no text layer"),
        (b"%PDF-1.7\n" + b"garbage " * 200, "PDF"),
        (docs.docx_bomb(), "would expand to 299 MiB"),
    ],
)
def test_files_without_text_fail_with_a_reason(tmp_path: Path, data: bytes, message: str) -> None:
    result = _extract(tmp_path, "upload.pdf", data)
    assert result["ok"] is False and message in result["error"], result


def test_a_zip_that_is_not_an_office_file_is_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert "Zip archives are not supported" in _extract(tmp_path, "a.docx", out.getvalue())["error"]


def test_a_compression_bomb_is_refused_by_its_ratio(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", b"<row/>" * (8 * 1024 * 1024))
    assert "compressed" in _extract(tmp_path, "bomb.xlsx", out.getvalue())["error"]


def test_a_pdf_of_thousands_of_blank_pages_stops_at_the_page_limit(tmp_path: Path) -> None:
    result = _extract(tmp_path, "blank.pdf", docs.blank_pdf(3000), max_pages=500)
    assert result["ok"] is False
    assert "only the first 500 of 3,000 pages were read" in result["error"]


def test_the_character_limit_cuts_and_says_so(tmp_path: Path) -> None:
    result = _extract(tmp_path, "long.txt", ("word " * 50_000).encode(), max_chars=10_000)
    assert result["ok"] and result["chars"] <= 10_000
    assert result["note"] == "only the first 10,000 characters were read"


def test_chunks_end_at_boundaries_and_name_their_pages() -> None:
    pages = [
        Segment("page", n, f"Page {n} paragraph one.\n\nPage {n} paragraph two is longer. " * 20) for n in (1, 2, 3)
    ]
    chunks = chunk(pages, 700)
    assert all(len(c.text) <= 700 for c in chunks)
    assert [c.location for c in chunks] == ["page 1", "page 1", "page 2", "page 2", "page 3", "page 3"]
    assert all(c.text.endswith(".") for c in chunks)  # cut after a sentence, never inside a word
    short = chunk([Segment("page", 1, "a"), Segment("page", 2, "b")], 700)
    assert [(c.location, c.text) for c in short] == [("pages 1–2", "a\n\nb")]
    pieces = split_text("One sentence here. " * 100, 300)
    assert all(len(p) <= 300 and p.endswith(".") for p in pieces)


def test_the_pool_stops_a_reader_past_the_time_limit_and_goes_on(tmp_path: Path) -> None:
    slow = tmp_path / "slow.pdf"
    slow.write_bytes(docs.blank_pdf(4000))
    quick = tmp_path / "quick.pdf"
    quick.write_bytes(docs.pdf([PHRASE]))

    async def go() -> str:
        pool = ExtractionPool(workers=1, memory_mb=2048, timeout_s=0.05)
        try:
            with pytest.raises(ExtractionError, match=r"took longer than 0\.05 s"):
                await pool.extract(slow, "slow.pdf", "", max_pages=4000, max_chars=10_000, chunk_chars=1200)
            pool.timeout_s = 60
            result = await pool.extract(quick, "quick.pdf", "", max_pages=10, max_chars=10_000, chunk_chars=1200)
            return result.chunks[0][1]
        finally:
            await pool.aclose()

    assert PHRASE in asyncio.run(go())


def test_the_pool_holds_readers_to_their_memory_limit(tmp_path: Path) -> None:
    """A document part under the zip guard's limits that still needs more memory than the
    reader may use: the file fails with the reason, the next one is read."""
    big = tmp_path / "big.docx"
    words = [secrets.token_hex(8) for _ in range(1000)]
    body = "".join(f"<w:p><w:r><w:t>{words[n % 1000]} {n}</w:t></w:r></w:p>" for n in range(700_000))
    xml = '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
    with (
        zipfile.ZipFile(io.BytesIO(docs.docx(["small"]))) as source,
        zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for info in source.infolist():
            if info.filename == "word/document.xml":
                out.writestr(info.filename, xml + body + "</w:body></w:document>")
            else:
                out.writestr(info, source.read(info))
    quick = tmp_path / "quick.txt"
    quick.write_text(PHRASE)

    async def go() -> str:
        pool = ExtractionPool(workers=1, memory_mb=300, timeout_s=120)
        try:
            with pytest.raises(ExtractionError) as failed:
                await pool.extract(big, "big.docx", "", max_pages=10, max_chars=10_000, chunk_chars=1200)
            assert "needs more memory than a reader may use" in str(failed.value)
            result = await pool.extract(quick, "quick.txt", "", max_pages=10, max_chars=10_000, chunk_chars=1200)
            return result.chunks[0][1]
        finally:
            await pool.aclose()

    assert asyncio.run(go()) == PHRASE
