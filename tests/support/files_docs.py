"""Real documents generated for the files tests: PDFs with reportlab, Office files with the very
libraries that read them, bombs with zipfile."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence


def pdf(pages: Sequence[str]) -> bytes:
    """A PDF whose page N holds the N-th text (lines split on newlines)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=A4)
    for text in pages:
        y = 800
        for line in text.splitlines() or [""]:
            c.drawString(50, y, line)
            y -= 14
            if y < 40:
                c.showPage()
                y = 800
        c.showPage()
    c.save()
    return out.getvalue()


def blank_pdf(pages: int) -> bytes:
    """A PDF of blank pages (no text layer at all, as a scan without OCR)."""
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    c = canvas.Canvas(out)
    for _ in range(pages):
        c.showPage()
    c.save()
    return out.getvalue()


def docx(paragraphs: Sequence[str], table: Sequence[Sequence[str]] = ()) -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.add_heading("Report", level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx(sheets: dict[str, Sequence[Sequence[object]]]) -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)  # type: ignore[arg-type]
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(list(row))
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def pptx(slides: Sequence[tuple[str, str]]) -> bytes:
    """Slides of (title, body)."""
    import pptx as python_pptx

    presentation = python_pptx.Presentation()
    layout = presentation.slide_layouts[1]
    for title, body in slides:
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def html(title: str, article: str) -> bytes:
    return (
        "<!DOCTYPE html><html><head><title>" + title + "</title></head><body>"
        "<nav><a href='/'>Home</a> | <a href='/about'>About</a></nav>"
        "<article><h1>" + title + "</h1>" + "".join(f"<p>{p}</p>" for p in article.split("\n\n")) + "</article>"
        "<footer>Copyright 2026 Example Corp. All rights reserved.</footer></body></html>"
    ).encode()


def json_doc(data: object) -> bytes:
    return json.dumps(data).encode()


def docx_bomb() -> bytes:
    """A DOCX whose document part declares 300 MiB: refused before any parser opens it."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as part:
            block = b"<w:p><w:r><w:t>a</w:t></w:r></w:p>" * 30000
            for _ in range(300 * 1024 * 1024 // len(block)):
                part.write(block)
    return out.getvalue()


PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82"
)
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8


FILLER_SUBJECTS = [
    "The turbine hall",
    "The cooling tower",
    "The control room",
    "The password policy",
    "Each shift",
    "The emergency drill",
    "The storage yard",
    "The night crew",
    "Turbine 3",
    "The audit team",
]
FILLER_VERBS = [
    "is inspected",
    "was repainted",
    "reports to",
    "depends on",
    "is reviewed with",
    "was moved near",
    "is logged by",
    "shares a budget with",
    "is cleaned after",
    "is scheduled before",
]
FILLER_OBJECTS = [
    "the quarterly checklist",
    "the maintenance office",
    "the west gate",
    "the safety officer",
    "the spare parts list",
    "the backup generator",
    "the visitor badge desk",
    "the canteen",
    "the fire brigade",
    "the weekly report",
]


def filler(paragraphs: int, seed: int = 7) -> list[str]:
    """Plausible plant-manual paragraphs (the same words again and again, as a long manual has)."""
    import random

    rng = random.Random(seed)
    out = []
    for n in range(paragraphs):
        sentences = [
            f"{rng.choice(FILLER_SUBJECTS)} {rng.choice(FILLER_VERBS)} {rng.choice(FILLER_OBJECTS)}."
            for _ in range(rng.randint(8, 14))
        ]
        out.append(f"Section {n + 1}. " + " ".join(sentences))
    return out
