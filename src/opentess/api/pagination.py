"""Laravel's page envelope (contract §1): ``page`` ≥ 1, ``per_page`` 1–100 (default 15; more is
clamped to 100).

Page URLs keep the request's other query parameters (``q``, filters, ``per_page``), so a client
that follows ``next_page_url`` gets the next page of the same listing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from opentess.errors import InvalidInput
from opentess.ids import MAX_PAGE


@dataclass(frozen=True, slots=True)
class Page:
    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


def _int_param(request: Request, name: str, default: int, lo: int, hi: int | None, errors: dict[str, list[str]]) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        errors[name] = [f"The {name} field must be an integer."]
        return default
    value = int(text)
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        errors[name] = [f"The {name} field must be {bound}."]
        return default
    return value


def page_of(request: Request, errors: dict[str, list[str]] | None = None, max_per_page: int = 100) -> Page:
    """The requested page; InvalidInput (with any ``errors`` found by the caller) when invalid."""
    errors = dict(errors or {})
    # per_page above the maximum is clamped, not refused (Pipedream sends up to 1000)
    per_page = min(_int_param(request, "per_page", 15, 1, None, errors), max_per_page)
    page = Page(_int_param(request, "page", 1, 1, MAX_PAGE, errors), per_page)
    if errors:
        raise InvalidInput(errors)
    return page


def envelope(request: Request, data: list[Any], total: int, page: Page) -> dict[str, Any]:
    """Laravel's page envelope. Its URLs start with the server's configured public URL, never
    with the request's Host header (which a client chooses)."""
    path = public_base(request) + request.url.path
    others = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]

    def url(n: int) -> str:
        return f"{path}?{urlencode([*others, ('page', str(n))])}"

    last = max(1, -(-total // page.size))
    links: list[dict[str, Any]] = [
        {"url": url(page.number - 1) if page.number > 1 else None, "label": "&laquo; Previous", "active": False}
    ]
    for n in _window(page.number, last):
        if n is None:
            links.append({"url": None, "label": "...", "active": False})
        else:
            links.append({"url": url(n), "label": str(n), "active": n == page.number})
    links.append(
        {"url": url(page.number + 1) if page.number < last else None, "label": "Next &raquo;", "active": False}
    )
    return {
        "current_page": page.number,
        "data": data,
        "first_page_url": url(1),
        "from": page.offset + 1 if data else None,
        "last_page": last,
        "last_page_url": url(last),
        "links": links,
        "next_page_url": url(page.number + 1) if page.number < last else None,
        "path": path,
        "per_page": page.size,
        "prev_page_url": url(page.number - 1) if page.number > 1 else None,
        "to": page.offset + len(data) if data else None,
        "total": total,
    }


def public_base(request: Request) -> str:
    """The server's public URL: ``OPENTESS_PUBLIC_URL``, else where it listens."""
    settings = request.app.state.opentess.settings
    return str(settings.public_base_url)


def _window(current: int, last: int, each_side: int = 3) -> list[int | None]:
    """Page numbers to link, Laravel style: all of them when few, else the first two, the last two
    and ``each_side`` around the current page, with None where numbers are skipped."""
    if last <= 2 * each_side + 6:
        return list(range(1, last + 1))
    shown = {1, 2, last - 1, last} | set(range(max(1, current - each_side), min(last, current + each_side) + 1))
    out: list[int | None] = []
    previous = 0
    for n in sorted(shown):
        if n - previous > 1:
            out.append(None)
        out.append(n)
        previous = n
    return out
