"""The internet for the toolsets' tests: one real HTTP server (aiohttp, in a thread of its own) on
127.0.0.1 that plays the search APIs, a MediaWiki API and web pages, and records every request
it receives (method, path, query, headers, body) so that tests assert on what was sent.

- ``/searxng/search`` SearXNG's JSON API; ``/brave/res/v1/web/search`` Brave's (key in
  ``X-Subscription-Token``); ``/tavily/search`` Tavily's (``Authorization: Bearer``). Their
  results are ``RESULTS`` (pages of this server, and off-site URLs). ``fail_with`` makes the next
  search answer an error status in the API's own shape.
- ``/w/api.php`` a MediaWiki Action API over ``ARTICLES`` (search, plain-text extracts, redirects,
  missing pages, MediaWiki's HTTP-200 errors).
- pages: ``/article`` (an article inside navigation, a cookie banner, a sidebar and a footer),
  ``/notes.txt``, ``/accents.txt`` (1,000 é), ``/latin1`` (an HTML page in ISO-8859-1),
  ``/report.pdf`` (made with reportlab), ``/image.png`` and ``/data.json`` (types that are not
  read), ``/untyped`` (HTML served as application/octet-stream), ``/huge`` (HTML of HUGE_BYTES,
  streamed), ``/huge.pdf`` (declares its size), ``/huge-stream.pdf`` (chunked, no size),
  ``/bomb`` (gzip that inflates to BOMB_BYTES), ``/slow`` (never answers), ``/drip`` (answers a
  few bytes at a time, forever), ``/host`` (echoes its Host header), ``/status/{code}``,
  ``/redirect?to=URL[&status=…]`` and ``/chain/{n}`` (n redirects, then the article)."""

from __future__ import annotations

import asyncio
import gzip
import io
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDict

from tests.support.processes import free_port

BRAVE_KEY = "brave-test-key-123"
TAVILY_KEY = "tvly-test-key-456"
HUGE_BYTES = 3_000_000
BOMB_BYTES = 30_000_000
ARTICLE_FACT = "The Lighthouse of Alexandria stood about one hundred metres tall on the island of Pharos."
BOILERPLATE = ("Accept all cookies", "Subscribe to our newsletter", "Copyright 2024 Wonders Weekly", "About us")
PDF_FACT = "Quarterly lighthouse maintenance report: every lamp was inspected in March."
TEXT_FACT = "Plain notes: the keeper logs the weather at dawn."

ARTICLE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>The Lighthouse of Alexandria | Wonders Weekly</title></head>
<body>
<div class="cookie-banner">We use cookies to improve your experience. <button>Accept all cookies</button></div>
<header><nav><a href="/">Home</a> <a href="/about">About us</a> <a href="/contact">Contact</a></nav></header>
<main><article>
<h1>The Lighthouse of Alexandria</h1>
<p>{ARTICLE_FACT} It was built by the Ptolemaic Kingdom during the reign of Ptolemy II Philadelphus,
and for many centuries it was one of the tallest structures made by human hands.</p>
<p>Its light, a fire reflected by bronze mirrors, guided ships into the harbour of Alexandria. Earthquakes
between 956 and 1323 damaged it, and its last stones were used to build the Citadel of Qaitbay.</p>
<p>Descriptions by travellers such as Ibn Jubayr give its three tiers: a square base, an octagonal middle
and a cylindrical top where the fire burned through the night.</p>
</article></main>
<aside><h3>Related stories</h3><ul><li><a href="/colossus">The Colossus of Rhodes</a></li>
<li><a href="/mausoleum">The Mausoleum at Halicarnassus</a></li></ul>
<div class="newsletter">Subscribe to our newsletter for weekly wonders.</div></aside>
<footer><p>Copyright 2024 Wonders Weekly. All rights reserved.</p></footer>
</body></html>
"""

# (title, snippet, path on this server or an absolute off-site URL)
RESULTS = [
    ("The Lighthouse of Alexandria", "The <b>Lighthouse</b> of Alexandria stood &amp; guided ships", "/article"),
    ("Pharos lighthouse : r/history", "A thread about the <b>Pharos</b>", "https://www.reddit.com/r/history/comments/1/pharos/"),
    ("Keeper's notes", "Plain notes on the <b>lighthouse</b>", "/notes.txt"),
    ("Maintenance report", "Quarterly <b>lighthouse</b> report (PDF)", "/report.pdf"),
    ("Lighthouses - old.reddit", "Another <b>thread</b>", "https://old.reddit.com/r/lighthouses/"),
    ("Lighthouse - Wikipedia", "A <span class=\"searchmatch\">lighthouse</span> is a tower", "https://en.wikipedia.org/wiki/Lighthouse"),
]  # fmt: skip

ARTICLES = {
    "Lighthouse of Alexandria": (
        "The Lighthouse of Alexandria, sometimes called the Pharos of Alexandria, was a lighthouse built by the "
        "Ptolemaic Kingdom.\n\n== History ==\nIt was completed around 280 BC and stood for centuries."
    ),
    "Lighthouse": "A lighthouse is a tower, building, or other type of physical structure designed to emit light.",
}
REDIRECTS = {"Pharos of Alexandria": "Lighthouse of Alexandria"}


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # names in any case
    body: bytes


def make_pdf(lines: list[str], title: str) -> bytes:
    """A one-page PDF with these lines and this document title (reportlab)."""
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    pdf = canvas.Canvas(out)
    pdf.setTitle(title)
    y = 800
    for line in lines:
        pdf.drawString(50, y, line)
        y -= 14
    pdf.showPage()
    pdf.save()
    return out.getvalue()


class FakeWeb:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.tls = tls  # serve https with this context
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.allow = [f"127.0.0.1:{self.port}"]  # what a fetcher must allow to reach this server
        self.requests: list[Received] = []
        self.fail_with: int | None = None  # the next search answers this status (then it is cleared)
        self._lock = threading.Lock()
        self._pdf = make_pdf([PDF_FACT, "Second line of the report."], "Lighthouse maintenance")
        self._bomb = gzip.compress(b"<html><body><p>" + b"a" * BOMB_BYTES + b"</p></body></html>", 9)
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> FakeWeb:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._record])
        routes = [
            ("GET", "/searxng/search", self._searxng),
            ("GET", "/brave/res/v1/web/search", self._brave),
            ("POST", "/tavily/search", self._tavily),
            ("GET", "/w/api.php", self._mediawiki),
            ("GET", "/article", self._article),
            ("GET", "/notes.txt", self._notes),
            ("GET", "/latin1", self._latin1),
            ("GET", "/accents.txt", self._accents),
            ("GET", "/report.pdf", self._report),
            ("GET", "/image.png", self._image),
            ("GET", "/data.json", self._json),
            ("GET", "/untyped", self._untyped),
            ("GET", "/huge", self._huge),
            ("GET", "/huge.pdf", self._huge_pdf),
            ("GET", "/huge-stream.pdf", self._huge_stream_pdf),
            ("GET", "/bomb", self._gzip_bomb),
            ("GET", "/slow", self._slow),
            ("GET", "/slow/search", self._slow),  # a search backend that never answers
            ("GET", "/drip", self._drip),
            ("GET", "/host", self._host),
            ("GET", "/status/{code}", self._status),
            ("GET", "/redirect", self._redirect),
            ("GET", "/chain/{n}", self._chain),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _shutdown(self) -> None:
        # handlers parked in /slow and /drip would hold the cleanup for their whole sleep
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        assert self._runner is not None
        await self._runner.cleanup()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.fail_with = None

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def page(self, path: str) -> str:
        return self.url + path

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            self.requests.append(
                Received(request.method, request.path, dict(request.query), CIMultiDict(request.headers), body)
            )
        response: web.StreamResponse = await handler(request)
        return response

    def _failure(self) -> int | None:
        status, self.fail_with = self.fail_with, None
        return status

    def _results(self) -> list[tuple[str, str, str]]:
        return [(title, snippet, path if "://" in path else self.url + path) for title, snippet, path in RESULTS]

    # search APIs -----------------------------------------------------------------------------------

    async def _searxng(self, request: web.Request) -> web.Response:
        status = self._failure()
        if status is not None:  # SearXNG answers a disabled format or its limiter with a bare page
            return web.Response(
                status=status, text="<html><body><h1>Forbidden</h1></body></html>", content_type="text/html"
            )
        results = [
            {"url": url, "title": title, "content": snippet, "engine": "fake", "score": 1.0}
            for title, snippet, url in self._results()
        ]
        return web.json_response(
            {"query": request.query.get("q", ""), "number_of_results": len(results), "results": results,
             "answers": [], "corrections": [], "infoboxes": [], "suggestions": [], "unresponsive_engines": []}
        )  # fmt: skip

    async def _brave(self, request: web.Request) -> web.Response:
        status = self._failure()
        if request.headers.get("X-Subscription-Token") != BRAVE_KEY:
            status = 401
        if status is not None:
            error = {
                "id": "e-1", "status": status, "code": "SUBSCRIPTION_TOKEN_INVALID",
                "detail": "The provided subscription token is invalid.", "meta": {"component": "authentication"},
            }  # fmt: skip
            return web.json_response({"type": "ErrorResponse", "error": error, "time": 1}, status=status)
        count = int(request.query.get("count", "20"))
        results = [
            {"type": "search_result", "title": title, "url": url, "description": snippet, "is_source_local": False}
            for title, snippet, url in self._results()[:count]
        ]
        return web.json_response(
            {"type": "search", "query": {"original": request.query.get("q", "")},
             "web": {"type": "search", "results": results, "family_friendly": True}}
        )  # fmt: skip

    async def _tavily(self, request: web.Request) -> web.Response:
        status = self._failure()
        if request.headers.get("Authorization") != f"Bearer {TAVILY_KEY}":
            status = 401
        if status is not None:
            return web.json_response({"detail": {"error": "Unauthorized: missing or invalid API key."}}, status=status)
        body = await request.json()
        domains = body.get("include_domains") or []
        results = [
            {"title": title, "url": url, "content": snippet, "score": 0.9, "raw_content": None}
            for title, snippet, url in self._results()
            if not domains or any(d in url for d in domains)
        ][: int(body.get("max_results", 5))]
        return web.json_response(
            {"query": body.get("query"), "answer": None, "images": [], "results": results, "response_time": 0.01}
        )

    async def _mediawiki(self, request: web.Request) -> web.Response:
        q = request.query
        status = self._failure()
        if status is not None:  # MediaWiki answers its errors with HTTP 200 and an error object
            error = {"code": "maxlag", "info": "Waiting for a database server: 7 seconds lagged."}
            return web.json_response({"error": error}, status=status)
        if q.get("action") != "query":
            return web.json_response(
                {"error": {"code": "badvalue", "info": 'Unrecognized value for parameter "action".'}}
            )
        if q.get("list") == "search":
            words = q.get("srsearch", "").lower().split()
            hits = [title for title, text in ARTICLES.items() if any(w in (title + text).lower() for w in words)]
            limit = int(q.get("srlimit", "10"))
            search = [
                {"ns": 0, "title": title, "pageid": n + 1,
                 "snippet": f'The <span class="searchmatch">{title}</span> &amp; more'}
                for n, title in enumerate(hits[:limit])
            ]  # fmt: skip
            return web.json_response(
                {"batchcomplete": True, "query": {"searchinfo": {"totalhits": len(hits)}, "search": search}}
            )
        if q.get("prop") == "extracts":
            title = q.get("titles", "")
            query: dict[str, Any] = {}
            if title in REDIRECTS and q.get("redirects"):
                query["redirects"] = [{"from": title, "to": REDIRECTS[title]}]
                title = REDIRECTS[title]
            if title in ARTICLES:
                query["pages"] = [{"pageid": 1, "ns": 0, "title": title, "extract": ARTICLES[title]}]
            else:
                query["pages"] = [{"ns": 0, "title": title, "missing": True}]
            return web.json_response({"batchcomplete": True, "query": query})
        return web.json_response({"batchcomplete": True})

    # pages ------------------------------------------------------------------------------------------

    async def _article(self, request: web.Request) -> web.Response:
        return web.Response(text=ARTICLE, content_type="text/html")

    async def _notes(self, request: web.Request) -> web.Response:
        return web.Response(text=TEXT_FACT + "\nSecond line.\n", content_type="text/plain")

    async def _latin1(self, request: web.Request) -> web.Response:
        page = "<html><head><title>Café</title></head><body><article><p>" + "Le café du phare est ouvert. " * 20
        return web.Response(
            body=(page + "</p></article></body></html>").encode("iso-8859-1"),
            headers={"Content-Type": "text/html; charset=ISO-8859-1"},
        )

    async def _accents(self, request: web.Request) -> web.Response:
        return web.Response(text="é" * 1000, content_type="text/plain", charset="utf-8")

    async def _report(self, request: web.Request) -> web.Response:
        return web.Response(body=self._pdf, content_type="application/pdf")

    async def _image(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, content_type="image/png")

    async def _json(self, request: web.Request) -> web.Response:
        return web.json_response({"a": 1})

    async def _untyped(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)  # aiohttp says application/octet-stream
        await response.write(ARTICLE.encode())
        await response.write_eof()
        return response

    async def _stream(self, request: web.Request, content_type: str, head: bytes, size: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        await response.write(head)
        block = b"<p>" + b"filler " * 1400 + b"</p>\n"
        sent = len(head)
        try:
            while sent < size:
                await response.write(block)
                sent += len(block)
        except (ConnectionResetError, ConnectionError):  # the client stopped reading, as it should
            return response
        await response.write_eof()
        return response

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        head = f"<html><head><title>Huge</title></head><body><article><p>{ARTICLE_FACT}</p>".encode()
        return await self._stream(request, "text/html; charset=utf-8", head, HUGE_BYTES)

    async def _huge_pdf(self, request: web.Request) -> web.Response:
        return web.Response(body=b"%PDF-1.4\n" + b"0" * HUGE_BYTES, content_type="application/pdf")

    async def _huge_stream_pdf(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "application/pdf", b"%PDF-1.4\n", HUGE_BYTES)

    async def _gzip_bomb(self, request: web.Request) -> web.Response:
        return web.Response(body=self._bomb, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"})

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response(text="too late")

    async def _drip(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        try:
            while True:
                await response.write(b"<p>drip</p>")
                await asyncio.sleep(0.05)
        except (ConnectionResetError, ConnectionError):
            return response

    async def _host(self, request: web.Request) -> web.Response:
        return web.Response(text=f"Host: {request.headers.get('Host', '')}", content_type="text/plain")

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status page")

    async def _redirect(self, request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query["to"]})

    async def _chain(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        location = f"/chain/{n - 1}" if n > 1 else "/article"
        return web.Response(status=302, headers={"Location": location})

    def redirect(self, to: str, status: int = 302) -> str:
        """A URL of this server that redirects to ``to``."""
        return f"{self.url}/redirect?status={status}&to={quote(to, safe='')}"

    def __enter__(self) -> FakeWeb:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
