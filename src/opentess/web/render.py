"""HTML: the templates (Jinja2, autoescaped, shipped in the package), the headers every page
carries, and errors in words."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from opentess import __version__
from opentess.errors import InvalidInput, OpentessError, RateLimited
from opentess.ids import MAX_PAGE, parse_id

if TYPE_CHECKING:
    from opentess.web.console import Visitor

# scripts and styles only from this server, no inline script, no framing: a page that echoes
# something it should not still cannot run it
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # pages hold workspace data (and, once, a token's secret): never kept by caches
    "Cache-Control": "no-store",
}


def credits(value: float | None) -> str:
    """Credits as a person reads them: every significant digit, no exponent."""
    if value is None:
        return "—"
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return text or "0"


def size(value: int | None) -> str:
    """Bytes as a person reads them (binary units: 1 KiB = 1,024 bytes)."""
    if value is None:
        return "—"
    if value < 1024:
        return f"{value} byte{'' if value == 1 else 's'}"
    amount = float(value)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        amount /= 1024
        if amount < 1024 or unit == "TiB":
            return f"{amount:.1f} {unit}".replace(".0 ", " ")
    raise AssertionError("unreachable")


def number(value: int | float | None) -> str:
    """A count with thousands separated (``32,000``)."""
    return "—" if value is None else f"{value:,}"


T = TypeVar("T")


def page_number(value: object) -> int:
    """A list's page number from a query or form field: 1 unless it names a page that can exist
    (an offset past 64 bits would be refused by the database)."""
    number = parse_id(value)
    return number if number is not None and number <= MAX_PAGE else 1


async def fetch_page(
    page_no: int, per_page: int, fetch: Callable[[int, int], Awaitable[tuple[list[T], int]]]
) -> tuple[list[T], int, int]:
    """The records of page ``page_no`` (``fetch(offset, limit)`` → records, total) and the page
    shown: past the last page — its last item was just deleted, or the link is old — the last
    page instead of an empty one without a pager."""
    records, total = await fetch((page_no - 1) * per_page, per_page)
    if not records and total and page_no > 1:
        page_no = math.ceil(total / per_page)
        records, total = await fetch((page_no - 1) * per_page, per_page)
    return records, total, page_no


def paging(page_no: int, total: int, per_page: int, url_of: Callable[[int], str]) -> dict[str, Any]:
    """A list page's pager: its page, how many there are, and the links to the pages beside it
    (``url_of(n)``), as the ``pager`` macro reads them."""
    pages = max(1, math.ceil(total / per_page))
    return {
        "page_no": page_no,
        "pages": pages,
        "prev_url": url_of(page_no - 1) if page_no > 1 else None,
        "next_url": url_of(page_no + 1) if page_no < pages else None,
    }


def when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def as_json(value: Any) -> Markup:
    """A value as JSON for a ``<script type="application/json">`` block (``<`` escaped, so the
    block cannot be closed from inside)."""
    text = orjson.dumps(value).decode().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


def pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("opentess.web", "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(credits=credits, when=when, as_json=as_json, pretty=pretty, size=size, number=number)
    env.globals["version"] = __version__
    return env


def render(
    request: Request,
    template: str,
    visitor: Visitor | None,
    *,
    status: int = 200,
    section: str = "",
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    ui = f"{root}/ui"
    html = (
        environment()
        .get_template(template)
        .render(
            request=request,
            visitor=visitor,
            ui=ui,
            static=f"{ui}/static",
            section=section,
            path=request.url.path,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def problems(exc: OpentessError) -> list[str]:
    """An error of the API in words, one line per problem."""
    if isinstance(exc, InvalidInput):
        return [f"{field}: {message}" for field, messages in exc.errors.items() for message in messages]
    if isinstance(exc, RateLimited):
        return [f"Too many requests: try again in {exc.retry_after} s."]
    return [exc.message]


TITLES = {
    401: "Sign-in needed",
    403: "Not allowed",
    404: "Not found",
    409: "Not possible now",
    429: "Too many requests",
}


def error_page(request: Request, visitor: Visitor | None, exc: OpentessError) -> HTMLResponse:
    status = exc.status
    title = TITLES.get(status, "Something went wrong" if status >= 500 else "This did not work")
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return render(request, "error.html", visitor, status=status, title=title, problems=problems(exc), headers=headers)
