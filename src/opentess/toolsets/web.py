"""The guarded web fetcher: one page of a URL a user (or a model) chose, as main text.

Rules, each enforced here for every fetch:

- **Addresses**: http(s) only; the host must resolve to public addresses only unless it is in
  the allow-list (``OPENTESS_FETCH_ALLOW_HOSTS``), checked when the request is made and the
  connection pinned to the checked address (opentess.netguard). Redirects are followed by the
  fetcher itself, at most ``max_redirects``, each hop checked the same way.
- **Time**: the whole fetch — lookups, every hop, the body, the extraction — within ``timeout_s``.
- **Types**: HTML (text/html, application/xhtml+xml), other text/* as is, and PDF; anything else
  is refused before its body is read, naming the type. A body served without a type or as
  application/octet-stream is sniffed: PDF or HTML by its start (and text when no type at all).
- **Size**: the body is read as a stream and never beyond ``max_bytes`` (decompressed bytes: the
  fetcher decodes gzip/deflate itself, with a bound, so a compression bomb cannot grow past it).
  A longer HTML or text page keeps its first ``max_bytes`` (``Page.truncated``): its beginning
  is still a page, and the main text of an article is near its start. A longer PDF is refused,
  since a PDF cut short cannot be read (its index is at the end).
- **Extraction** (trafilatura for HTML's main text and title, pypdf for PDF, page-limited) runs
  in a small pool of threads of the fetcher's own, never on the event loop nor in the default
  executor (where the name lookups run); ``Page.text`` holds at most ``max_chars`` characters.

FetchRefused means the URL may not be fetched (scheme, address, type, size); FetchFailed that
fetching it did not work (network, HTTP error status, time, an unreadable document)."""

from __future__ import annotations

import asyncio
import codecs
import io
import re
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from opentess import __version__, netguard

REDIRECTS = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
PDF_TYPE = "application/pdf"
UNTYPED = "application/octet-stream"  # what servers say of files they know nothing about: sniffed
SNIFFED = {"pdf": PDF_TYPE, "html": "text/html", "text": "text/plain"}
MAX_PDF_PAGES = 50
EXTRACT_THREADS = 2
TITLE_CHARS = 200
HEADERS = {
    "user-agent": f"Mozilla/5.0 (compatible; opentess/{__version__})",
    "accept": "text/html,application/xhtml+xml,text/plain;q=0.9,application/pdf;q=0.8,text/*;q=0.5",
    "accept-encoding": "gzip, deflate",  # the two the fetcher decodes itself, with a bound
}
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Page:
    url: str  # asked
    final_url: str  # after redirects
    title: str
    text: str  # main text (HTML via trafilatura; PDF text; plain text as is), at most max_chars
    content_type: str
    bytes: int  # of the body read (decompressed)
    truncated: bool = False  # the body was cut at max_bytes or the text at max_chars


class FetchRefused(Exception):
    """The URL may not be fetched (scheme, private address, content type, size)."""


class FetchFailed(Exception):
    """Fetching did not work: network error, HTTP error status, timeout, unreadable document."""


@dataclass(frozen=True, slots=True)
class _Body:
    final_url: str
    content_type: str  # as the server declared it (empty when it did not)
    kind: str  # html, text or pdf
    charset: str | None
    data: bytes
    cut: bool  # more followed max_bytes


class Fetcher:
    def __init__(
        self,
        *,
        allow_hosts: Sequence[str] = (),
        max_bytes: int = 2_000_000,
        timeout_s: float = 10.0,
        max_redirects: int = 5,
        max_chars: int = 20_000,
        setting: str = "OPENTESS_FETCH_ALLOW_HOSTS",
        extract_threads: int = EXTRACT_THREADS,
    ) -> None:
        self.allow_hosts = list(allow_hosts)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self.max_chars = max_chars
        self.setting = setting
        self._client = netguard.PinnedClient(timeout_s=timeout_s)
        # a few threads: extraction is CPU-bound, so more would only queue on the GIL; a page
        # whose extraction waits too long ends in the fetch's timeout like any slow page
        self._extractors = ThreadPoolExecutor(max_workers=extract_threads, thread_name_prefix="opentess-extract")

    async def aclose(self) -> None:
        await self._client.aclose()
        self._extractors.shutdown(wait=False, cancel_futures=True)

    async def fetch(self, url: str) -> Page:
        """The page at ``url`` as main text; FetchRefused or FetchFailed saying why not."""
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._download(url)
                loop = asyncio.get_running_loop()
                try:
                    title, text, cut = await loop.run_in_executor(
                        self._extractors, extract, body.kind, body.data, body.charset, self.max_chars
                    )
                except FetchFailed as exc:
                    raise FetchFailed(f"{body.final_url}: {exc}") from None
        except TimeoutError:
            raise FetchFailed(f"{url}: no complete answer within {self.timeout_s:g} s") from None
        except httpx.TimeoutException:
            raise FetchFailed(f"{url}: no answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise FetchFailed(f"{url}: {type(exc).__name__}: {exc}"[:500]) from None
        return Page(url, body.final_url, title, text, body.content_type, len(body.data), body.cut or cut)

    def _target(self, url: str, asked: str) -> netguard.Target:
        try:
            return netguard.parse(url, self.allow_hosts, self.setting)
        except netguard.Refused as exc:
            raise FetchRefused(_refusal(url, asked, str(exc))) from None

    async def _addresses(self, target: netguard.Target, url: str, asked: str) -> list[netguard.Address]:
        try:
            return await netguard.checked_addresses(target, self.setting)
        except netguard.Unresolvable as exc:
            raise FetchFailed(f"{url}: {exc}") from None
        except netguard.Refused as exc:
            raise FetchRefused(_refusal(url, asked, str(exc))) from None

    async def _download(self, url: str) -> _Body:
        current = url
        for _hop in range(self.max_redirects + 1):
            target = self._target(current, url)
            addresses = await self._addresses(target, current, url)
            response = await self._client.open(target, addresses, headers=HEADERS)
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECTS and location:
                    current = urljoin(current, location.strip())
                    continue
                if not 200 <= response.status_code < 300:
                    raise FetchFailed(f"{current}: HTTP {response.status_code}")
                content_type = response.headers.get("content-type", "").strip()
                kind = _kind(content_type, current)
                charset_match = _CHARSET.search(content_type)
                charset = charset_match.group(1) if charset_match else None
                declared = response.headers.get("content-length", "")
                if kind == "pdf" and declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchRefused(_too_large(current, self.max_bytes, int(declared)))
                data, cut = await self._read(response, current)
            finally:
                await response.aclose()
            if kind == "unknown":
                kind = _sniff(data, current, content_type)
                content_type = SNIFFED[kind]
            if kind == "pdf" and cut:
                raise FetchRefused(_too_large(current, self.max_bytes))
            return _Body(current, content_type, kind, charset, data, cut)
        raise FetchFailed(f"{url}: more than {self.max_redirects} redirects")

    async def _read(self, response: httpx.Response, url: str) -> tuple[bytes, bool]:
        """At most max_bytes of the decoded body, and whether more followed."""
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        decoder = None
        if encoding in ("gzip", "x-gzip", "deflate"):
            decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header, told apart
        elif encoding not in ("", "identity"):
            raise FetchFailed(f"{url}: the body is encoded as {encoding}, which opentess does not decode")
        buffer = bytearray()
        try:
            async for chunk in response.aiter_raw():
                room = self.max_bytes - len(buffer)
                # one byte more than there is room for says that the body is longer
                piece = decoder.decompress(chunk, room + 1) if decoder is not None else chunk
                if len(piece) > room:
                    buffer += piece[:room]
                    return bytes(buffer), True
                buffer += piece
            if decoder is not None:
                rest = decoder.flush()
                if len(rest) > self.max_bytes - len(buffer):
                    buffer += rest[: self.max_bytes - len(buffer)]
                    return bytes(buffer), True
                buffer += rest
        except zlib.error as exc:
            raise FetchFailed(f"{url}: the compressed body is invalid ({exc})") from None
        return bytes(buffer), False


def _refusal(url: str, asked: str, reason: str) -> str:
    if url == asked:
        return f"{url} may not be fetched: {reason}"
    return f"{asked} redirects to {url}, which may not be fetched: {reason}"


def _too_large(url: str, limit: int, size: int | None = None) -> str:
    said = f" ({size:,} bytes)" if size is not None else ""
    return f"{url} is a PDF larger than {limit:,} bytes{said}; only whole PDFs can be read"


def _kind(content_type: str, url: str) -> str:
    mime = content_type.split(";")[0].strip().lower()
    if mime in HTML_TYPES:
        return "html"
    if mime == PDF_TYPE:
        return "pdf"
    if mime.startswith("text/"):
        return "text"
    if not mime or mime == UNTYPED:
        return "unknown"
    raise FetchRefused(f"{url} is {mime}, which is not read (only HTML, text and PDF pages are)")


def _sniff(data: bytes, url: str, content_type: str) -> str:
    """What a body served without a type (or as bytes of any kind) is: PDF and HTML by their
    start; text only when no type was declared at all and the start holds no NUL byte."""
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF-"):
        return "pdf"
    lowered = head.lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<body" in lowered:
        return "html"
    if not content_type and b"\x00" not in head:
        return "text"
    declared = content_type.split(";")[0].strip().lower() or "served without a content type"
    raise FetchRefused(f"{url} is {declared} and does not look like HTML, text or PDF")


# extraction: in the fetcher's threads ---------------------------------------------------------------


def extract(kind: str, data: bytes, charset: str | None, max_chars: int) -> tuple[str, str, bool]:
    """(title, text, whether the text was cut at max_chars) of a body of ``kind``."""
    if kind == "pdf":
        title, text = _pdf(data, max_chars)
    elif kind == "html":
        title, text = _html(data, charset)
    else:
        text = _decode(data, charset)
        title = ""
    text = text.strip()
    if not title:
        title = next((line.strip("# \t") for line in text.splitlines() if line.strip("# \t")), "")
    return title[:TITLE_CHARS], text[:max_chars], len(text) > max_chars


def _decode(data: bytes, charset: str | None) -> str:
    """The declared charset (a stray bad byte replaced), else UTF-8, else Windows-1252. Decoding
    is incremental: a body cut at max_bytes may end inside a character."""
    if charset:
        try:
            return codecs.getincrementaldecoder(charset)(errors="replace").decode(data, final=False)
        except LookupError:
            pass
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _html(data: bytes, charset: str | None) -> tuple[str, str]:
    import trafilatura
    from trafilatura.metadata import extract_title

    # the HTTP charset overrides the page's own declaration; without one, trafilatura reads
    # the page's <meta charset> and guesses
    document: str | bytes = _decode(data, charset) if charset else data
    tree = trafilatura.load_html(document)
    if tree is None:
        return "", _decode(data, charset)
    title = extract_title(tree) or ""  # before extract(), which prunes the tree it is given
    text = trafilatura.extract(tree, output_format="markdown", include_tables=True, include_comments=False)
    if not text:  # pages trafilatura finds no article in: their whole text
        text = trafilatura.html2txt(document) or ""
    return title, text


def _pdf(data: bytes, max_chars: int) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    parts: list[str] = []
    size = 0
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise FetchFailed("the PDF is encrypted with a password")
        for page in reader.pages[:MAX_PDF_PAGES]:
            text = page.extract_text() or ""
            parts.append(text)
            size += len(text)
            if size > max_chars:
                break
        metadata = reader.metadata
        title = metadata.title if metadata is not None and metadata.title else ""
    except FetchFailed:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise FetchFailed(f"the PDF could not be read ({type(exc).__name__}: {exc})"[:300]) from None
    return str(title), "\n\n".join(parts)
