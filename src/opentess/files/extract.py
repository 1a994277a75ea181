"""Text out of documents, with established libraries and within limits. Runs in the extraction
worker processes (opentess.files.worker), never in the server's event loop.

The format is sniffed from the content, not trusted from the name or the declared type: PDF by
its signature, the Office formats by the parts inside the zip (after the zip-bomb guard),
legacy OLE files and everything ``filetype`` recognises (images, audio, archives, executables)
refused with a clear message; what remains must decode as text, and only then do the name and
declared type choose among the text formats (CSV, Markdown, HTML, JSON, plain text).

Libraries (docs/files.md says why these and not markitdown): pypdf (pure Python, lazy pages,
decompression limits on by default), python-docx, python-pptx, openpyxl in read-only mode,
trafilatura for HTML's main text, the standard library for CSV and JSON."""

from __future__ import annotations

import codecs
import csv
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentess.files.chunking import Segment

HEAD_BYTES = 8192
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# the zip-bomb guard: what an Office file may declare before any library opens it. CPython's
# zipfile stops each member at its declared size (a lying header fails its CRC check), so
# checking the declared sizes is sound. Limits in bytes.
ZIP_MAX_MEMBERS = 5000
ZIP_MAX_MEMBER = 64 * 1024 * 1024
ZIP_MAX_TOTAL = 256 * 1024 * 1024
ZIP_MAX_RATIO = 200  # for members above 1 MiB


class ExtractionError(Exception):
    """The file cannot give text; the message is for the person who uploaded it."""


@dataclass
class Extracted:
    kind: str
    segments: list[Segment]
    pages: int | None = None  # pages (PDF), slides (PPTX) or sheets (XLSX): for credits
    headers: dict[str, str] = field(default_factory=dict)  # header row of each table group
    note: str | None = None  # what the limits left out


@dataclass(frozen=True)
class Limits:
    max_pages: int
    max_chars: int


# sniffing -----------------------------------------------------------------------------------------


def check_ooxml(path: Path) -> str:
    """The Office format of a zip (docx, xlsx, pptx) after checking what it declares."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ExtractionError(f"The file looks like a zip archive but cannot be opened ({exc}).") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > ZIP_MAX_MEMBERS:
            raise ExtractionError(f"The archive holds {len(infos)} parts (the limit is {ZIP_MAX_MEMBERS}).")
        total = 0
        for info in infos:
            if info.flag_bits & 0x1:
                raise ExtractionError("The document is encrypted with a password.")
            if info.file_size > ZIP_MAX_MEMBER:
                raise ExtractionError(
                    f"The document is unsafe to open: its part {info.filename} would expand to "
                    f"{info.file_size // (1024 * 1024)} MiB (the limit is {ZIP_MAX_MEMBER // (1024 * 1024)} MiB)."
                )
            if info.file_size > (1 << 20) and info.file_size > ZIP_MAX_RATIO * max(info.compress_size, 1):
                raise ExtractionError(
                    f"The document is unsafe to open: its part {info.filename} is compressed "
                    f"{info.file_size // max(info.compress_size, 1)} to 1 (a zip bomb?)."
                )
            total += info.file_size
        if total > ZIP_MAX_TOTAL:
            raise ExtractionError(
                f"The document is unsafe to open: it would expand to {total // (1024 * 1024)} MiB "
                f"(the limit is {ZIP_MAX_TOTAL // (1024 * 1024)} MiB)."
            )
        names = {info.filename for info in infos}
    if "word/document.xml" in names:
        return "docx"
    if "xl/workbook.xml" in names:
        return "xlsx"
    if "ppt/presentation.xml" in names:
        return "pptx"
    raise ExtractionError("Zip archives are not supported (only .docx, .xlsx and .pptx among zip-based formats).")


def sniff(path: Path) -> str:
    """pdf, docx, xlsx, pptx, or text (decided further by ``text_kind``)."""
    import filetype  # type: ignore[import-untyped]

    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    if not head:
        raise ExtractionError("The file is empty.")
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return check_ooxml(path)
    if head.startswith(OLE_SIGNATURE):
        raise ExtractionError(
            "Legacy Microsoft Office files (.doc, .xls, .ppt) are not supported; save it as .docx, .xlsx or .pptx."
        )
    guessed = filetype.guess(head)
    if guessed is not None:
        raise ExtractionError(
            f"The file is {guessed.mime}, which holds no text opentess can extract "
            "(images, audio, video, archives and programs are not supported; OCR is not available)."
        )
    return "text"


def decode(data: bytes) -> str:
    """Text from bytes: a BOM's encoding, else UTF-8, else Windows-1252 — unless the bytes are
    binary (control characters), which is an error."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if data.startswith(bom):
            return codecs.getincrementaldecoder(encoding)(errors="replace").decode(data, final=False)
    head = data[:HEAD_BYTES]
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    if b"\x00" in head or controls > len(head) // 100:
        raise ExtractionError(
            "The file is not a document opentess can read: its content is not PDF, DOCX, PPTX, XLSX or text."
        )
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def text_kind(text: str, filename: str, content_type: str) -> str:
    """Among text formats, the name and the declared type decide how to read it."""
    suffix = Path(filename).suffix.lower()
    declared = content_type.split(";")[0].strip().lower()
    start = text.lstrip()[:200].lower()
    if start[:1] in ("{", "["):
        try:
            json.loads(text)
            return "json"
        except ValueError:
            pass
    if start.startswith(("<!doctype html", "<html")) or (
        (suffix in (".html", ".htm", ".xhtml") or declared in ("text/html", "application/xhtml+xml")) and "<" in text
    ):
        return "html"
    if suffix in (".csv", ".tsv") or declared in ("text/csv", "text/tab-separated-values"):
        return "csv"
    if suffix in (".md", ".markdown") or declared == "text/markdown":
        return "markdown"
    return "text"


# extraction -----------------------------------------------------------------------------------------


class _Budget:
    def __init__(self, max_chars: int) -> None:
        self.left = max_chars
        self.full = False

    def take(self, text: str) -> str:
        if len(text) >= self.left:
            text, self.full = text[: self.left], True
        self.left -= len(text)
        return text


def extract(path: Path, filename: str, content_type: str, limits: Limits) -> Extracted:
    kind = sniff(path)
    if kind == "pdf":
        result = _pdf(path, limits)
    elif kind == "docx":
        result = _docx(path, limits)
    elif kind == "pptx":
        result = _pptx(path, limits)
    elif kind == "xlsx":
        result = _xlsx(path, limits)
    else:
        with path.open("rb") as fh:
            data = fh.read(limits.max_chars * 4)  # UTF-8 holds at most 4 bytes a character
        text = decode(data)
        result = _text(text, text_kind(text, filename, content_type), limits)
    if not any(s.text.strip() for s in result.segments):
        where = f" ({result.note})" if result.note else ""
        if result.kind == "pdf":
            raise ExtractionError(
                "No text could be extracted: the PDF has no text layer (a scanned document? OCR is not available)"
                + where
                + "."
            )
        raise ExtractionError(f"No text could be extracted from this {result.kind.upper()} file{where}.")
    return result


def _unreadable(kind: str, exc: Exception) -> ExtractionError:
    """The error of an Office file a library could not read. libxml2 reports an allocation
    that failed under the worker's memory limit as an "unknown error" of the XML."""
    if isinstance(exc, MemoryError) or "unknown error" in str(exc) or "Memory allocation failed" in str(exc):
        return ExtractionError(
            f"Reading this {kind} file needs more memory than a reader may use (OPENTESS_FILES_EXTRACT_MEMORY_MB)."
        )
    return ExtractionError(f"The {kind} file could not be read ({type(exc).__name__}: {exc}).")


def _pdf(path: Path, limits: Limits) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    budget = _Budget(limits.max_chars)
    segments: list[Segment] = []
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError("The PDF is encrypted with a password.")
        total = len(reader.pages)
        read = min(total, limits.max_pages)
        for index in range(read):
            text = reader.pages[index].extract_text() or ""
            segments.append(Segment("page", index + 1, budget.take(text)))
            if budget.full:
                read = index + 1
                break
    except ExtractionError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        kind = type(exc).__name__
        if kind == "LimitReachedError":
            raise ExtractionError("The PDF holds a compressed stream larger than allowed; it was not read.") from None
        raise ExtractionError(f"The PDF could not be read ({kind}: {exc}).") from None
    note = None
    if budget.full:
        note = f"only the first {limits.max_chars:,} characters (to page {read}) were read"
    elif read < total:
        note = f"only the first {read:,} of {total:,} pages were read"
    return Extracted("pdf", segments, pages=read, note=note)


def _docx(path: Path, limits: Limits) -> Extracted:
    import docx
    from docx.table import Table

    budget = _Budget(limits.max_chars)
    segments: list[Segment] = []
    try:
        document = docx.Document(str(path))
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                text = "\n".join(" | ".join(cell.text.strip() for cell in row.cells) for row in block.rows)
            else:
                text = block.text
            if text.strip():
                segments.append(Segment("paragraph", len(segments) + 1, budget.take(text)))
                if budget.full:
                    break
    except Exception as exc:  # python-docx and lxml raise many kinds on a damaged file
        raise _unreadable("DOCX", exc) from None
    note = f"only the first {limits.max_chars:,} characters were read" if budget.full else None
    return Extracted("docx", segments, note=note)


def _shape_texts(shapes: Any) -> list[str]:
    texts: list[str] = []
    for shape in shapes:
        if getattr(shape, "shapes", None) is not None:  # a group
            texts += _shape_texts(shape.shapes)
        if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
            texts.append(shape.text_frame.text)
        if getattr(shape, "has_table", False):
            rows = shape.table.rows
            texts.append("\n".join(" | ".join(cell.text.strip() for cell in row.cells) for row in rows))
    return texts


def _pptx(path: Path, limits: Limits) -> Extracted:
    import pptx

    budget = _Budget(limits.max_chars)
    segments: list[Segment] = []
    read = 0
    try:
        presentation = pptx.Presentation(str(path))
        for number, slide in enumerate(presentation.slides, 1):
            if number > limits.max_pages:
                break
            read = number
            texts = _shape_texts(slide.shapes)
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                notes = slide.notes_slide.notes_text_frame.text.strip()
                if notes:
                    texts.append(f"Notes: {notes}")
            segments.append(Segment("slide", number, budget.take("\n".join(texts))))
            if budget.full:
                break
        total = len(presentation.slides)
    except Exception as exc:  # python-pptx and lxml raise many kinds on a damaged file
        raise _unreadable("PPTX", exc) from None
    note = None
    if budget.full:
        note = f"only the first {limits.max_chars:,} characters were read"
    elif read < total:
        note = f"only the first {read:,} of {total:,} slides were read"
    return Extracted("pptx", segments, pages=read, note=note)


def _cells(row: tuple[Any, ...] | list[Any]) -> str:
    cells = ["" if v is None else str(v).strip() for v in row]
    while cells and not cells[-1]:
        cells.pop()
    return " | ".join(cells)


def _xlsx(path: Path, limits: Limits) -> Extracted:
    import openpyxl  # type: ignore[import-untyped]

    budget = _Budget(limits.max_chars)
    segments: list[Segment] = []
    headers: dict[str, str] = {}
    sheets = 0
    try:
        # a file object: openpyxl refuses a path whose name does not end in .xlsx, and files
        # are stored under generated names
        handle = path.open("rb")
        workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
        try:
            for sheet in workbook.worksheets:
                sheets += 1
                sheet.reset_dimensions()  # a workbook's declared dimensions may lie
                group = f"sheet {sheet.title}"
                for number, row in enumerate(sheet.iter_rows(values_only=True), 1):
                    line = _cells(row)
                    if not line.replace("|", "").strip():
                        continue
                    if group not in headers:
                        headers[group] = budget.take(line)
                    else:
                        segments.append(Segment("row", number, budget.take(line), group))
                    if budget.full:
                        break
                if budget.full:
                    break
        finally:
            workbook.close()
            handle.close()
    except Exception as exc:  # openpyxl raises many kinds on a damaged file
        raise _unreadable("XLSX", exc) from None
    if not segments and headers:  # sheets of one row each: the rows are the content
        segments = [Segment("row", 1, line, group) for group, line in headers.items()]
        headers = {}
    note = f"only the first {limits.max_chars:,} characters were read" if budget.full else None
    return Extracted("xlsx", segments, pages=sheets, headers=headers, note=note)


def _lines(text: str, budget: _Budget) -> list[Segment]:
    return [Segment("line", n, line) for n, line in enumerate(budget.take(text).splitlines(), 1)]


def _text(text: str, kind: str, limits: Limits) -> Extracted:
    budget = _Budget(limits.max_chars)
    headers: dict[str, str] = {}
    if kind == "json":
        pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        segments = _lines(pretty, budget)
    elif kind == "html":
        import trafilatura

        main = trafilatura.extract(text, output_format="markdown", include_tables=True)
        if not main:  # pages trafilatura finds no article in: their whole text
            main = trafilatura.html2txt(text) or ""
        segments = _lines(main, budget)
    elif kind == "csv":
        sample = text[:20000]
        try:
            dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
        segments = []
        for number, row in enumerate(csv.reader(io.StringIO(budget.take(text)), dialect), 1):
            line = _cells(row)
            if not line.replace("|", "").strip():
                continue
            if "" not in headers:
                headers[""] = line
            else:
                segments.append(Segment("row", number, line))
        if not segments and headers:
            segments, headers = [Segment("row", 1, headers[""])], {}
    else:
        segments = _lines(text, budget)
    note = f"only the first {limits.max_chars:,} characters were read" if budget.full else None
    return Extracted(kind, segments, headers=headers, note=note)
