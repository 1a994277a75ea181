"""Web search backends behind one seam: SearXNG's JSON API (the self-hosted default), Brave
Search and Tavily.

A backend is configured by the operator (a trusted URL, an API key of theirs), so it is called
with an ordinary httpx client that honours the environment's proxy settings — not through the
address guard that user-chosen URLs go through (opentess.netguard). Each search is bounded by the
configured timeout as a whole; a failure of any kind is a SearchError whose message names the
backend and says why, without the API key.

Site restriction (``sites``) is asked of the backend (``site:`` terms, Tavily's
``include_domains``) and enforced on the results as well, since a metasearch engine passes
``site:`` on to engines that may ignore it."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx

from opentess import __version__

USER_AGENT = f"opentess/{__version__} (+self-hosted agent server)"
BRAVE_URL = "https://api.search.brave.com/res/v1"
TAVILY_URL = "https://api.tavily.com"
BRAVE_MAX_COUNT = 20  # the API's limit per request
TAVILY_MAX_COUNT = 20
ERROR_CHARS = 300  # of a backend's error message, in ours
_TAGS = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class SearchResult:
    title: str
    url: str
    snippet: str


class SearchError(Exception):
    """The backend failed; the message says why (never with a secret in it)."""


class SearchBackend(Protocol):
    name: str

    async def search(
        self, query: str, *, count: int, sites: Sequence[str] = (), language: str | None = None
    ) -> list[SearchResult]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class SearchConfig:
    """The ``[search]`` table: ``provider``, ``base_url`` (SearXNG: required; Brave and Tavily:
    their public API unless given, e.g. a proxy or a test server), the API key (resolved from
    ``api_key_env``; Brave and Tavily need one) and the timeout of one search."""

    provider: Literal["searxng", "brave", "tavily"]
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0


def make_search_backend(config: SearchConfig) -> SearchBackend:
    """The backend the configuration names; ValueError when it cannot work (no SearXNG URL, no
    API key for Brave or Tavily, an unknown provider), naming what is missing."""
    if config.provider == "searxng":
        if not config.base_url:
            raise ValueError(
                "The searxng search provider needs base_url (the SearXNG instance, e.g. http://searxng:8080)."
            )
        return SearXNG(config)
    if config.provider in ("brave", "tavily"):
        if not config.api_key:
            raise ValueError(f"The {config.provider} search provider needs an API key (api_key_env in [search]).")
        return Brave(config) if config.provider == "brave" else Tavily(config)
    raise ValueError(f"Unknown search provider {config.provider!r} (searxng, brave or tavily).")


# helpers shared with the Wikipedia client ------------------------------------------------------------


def plain(text: Any) -> str:
    """Text out of a snippet that may hold HTML (highlighting tags, entities), on one line."""
    if not isinstance(text, str):
        return ""
    return _SPACES.sub(" ", html.unescape(_TAGS.sub("", text))).strip()


def error_detail(response: httpx.Response) -> str:
    """What a failed API answer says about itself: the message of the usual JSON error shapes
    (Brave's ``error.detail``, Tavily's ``detail.error``, MediaWiki's ``error.info``, a bare
    ``error``/``message``/``detail``), else the start of the body as text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    found: Any = None
    if isinstance(body, dict):
        for outer in ("error", "detail", "message"):
            value = body.get(outer)
            if isinstance(value, dict):
                value = next((value[k] for k in ("detail", "error", "message", "info") if value.get(k)), None)
            if isinstance(value, str) and value.strip():
                found = value
                break
    text = plain(found if found is not None else response.text)
    return text[:ERROR_CHARS]


def site_parts(site: str) -> tuple[str, str]:
    """``reddit.com``, ``https://www.reddit.com/r/python/`` → (host without www., path prefix)."""
    text = site.strip().lower()
    if "//" not in text:
        text = "//" + text
    parts = urlsplit(text)
    host = (parts.hostname or "").removeprefix("www.")
    return host, parts.path.rstrip("/")


def on_sites(url: str, sites: Sequence[str]) -> bool:
    """Whether ``url`` is on one of ``sites`` (the site's host or a subdomain of it, under its path)."""
    if not sites:
        return True
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    for site in sites:
        site_host, prefix = site_parts(site)
        on_host = bool(site_host) and (host == site_host or host.endswith("." + site_host))
        if on_host and (not prefix or parts.path == prefix or parts.path.startswith(prefix + "/")):
            return True
    return False


def with_sites(query: str, sites: Sequence[str]) -> str:
    """The query with ``site:`` terms (several joined by OR, which binds tighter than the implicit AND)."""
    terms = []
    for site in sites:
        host, prefix = site_parts(site)
        if host:
            terms.append(f"site:{host}{prefix}")
    return f"{query} {' OR '.join(terms)}" if terms else query


def _results(items: Any, url_key: str, snippet_key: str, sites: Sequence[str], count: int) -> list[SearchResult]:
    found: list[SearchResult] = []
    seen: set[str] = set()
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        url = item.get(url_key)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or url in seen:
            continue
        if not on_sites(url, sites):
            continue
        seen.add(url)
        found.append(SearchResult(plain(item.get("title")) or url, url, plain(item.get(snippet_key))))
        if len(found) >= count:
            break
    return found


class ApiClient:
    """A JSON API of the operator's on its own connection pool (the search backends and the
    Wikipedia client): ``_call`` bounds one request, sends it and translates every failure."""

    name = ""
    label = ""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, *, follow_redirects: bool) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._secret = api_key
        # the API keys travel in custom headers that httpx would carry across a redirect to
        # another host, so only the key-less SearXNG follows redirects (an http → https move, say)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            headers={"user-agent": USER_AGENT, "accept": "application/json"},
            follow_redirects=follow_redirects,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _fail(self, message: str) -> SearchError:
        if self._secret:
            message = message.replace(self._secret, "***")
        return SearchError(f"{self.label}: {message}")

    def _hint(self, status: int) -> str:
        return ""

    async def _call(self, request: httpx.Request) -> Any:
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.send(request)
        except (TimeoutError, httpx.TimeoutException):
            raise self._fail(f"no answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise self._fail(f"the request failed ({type(exc).__name__}: {exc})") from None
        if response.status_code >= 400 or response.status_code < 200:
            detail = error_detail(response)
            hint = self._hint(response.status_code)
            raise self._fail(f"HTTP {response.status_code}" + (f": {detail}" if detail else "") + hint)
        if 300 <= response.status_code < 400:
            location = response.headers.get("location", "?")
            raise self._fail(f"HTTP {response.status_code}: a redirect to {location} (not followed)")
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise self._fail(f"the answer is not JSON ({kind})") from None


class SearXNG(ApiClient):
    """``GET {base}/search?q=…&format=json`` (the instance must list ``json`` in
    ``search.formats`` of its settings.yml). SearXNG answers a page of ~10-20 results whatever
    is asked: ``count`` keeps the first ones."""

    name = "searxng"

    def __init__(self, config: SearchConfig) -> None:
        assert config.base_url
        super().__init__(config.base_url, config.api_key, config.timeout_s, follow_redirects=True)
        self.label = f"SearXNG at {self.base_url}"

    def _hint(self, status: int) -> str:
        if status == 403:
            return " (is the json format enabled? add json to search.formats in the instance's settings.yml)"
        if status == 429:
            return " (its rate limiter refused opentess: set server.limiter to false on a private instance)"
        return ""

    async def search(
        self, query: str, *, count: int, sites: Sequence[str] = (), language: str | None = None
    ) -> list[SearchResult]:
        params = {"q": with_sites(query, sites), "format": "json", "pageno": "1"}
        if language:
            params["language"] = language
        body = await self._call(self._client.build_request("GET", f"{self.base_url}/search", params=params))
        if not isinstance(body, dict):
            raise self._fail("the answer has no results list")
        return _results(body.get("results"), "url", "content", sites, max(count, 1))


class Brave(ApiClient):
    """``GET {base}/web/search?q=…&count=…`` with the key in ``X-Subscription-Token``; results in
    ``web.results[]`` (``title``, ``url``, ``description`` with highlighting tags)."""

    name = "brave"
    label = "Brave Search"

    def __init__(self, config: SearchConfig) -> None:
        super().__init__(config.base_url or BRAVE_URL, config.api_key, config.timeout_s, follow_redirects=False)

    async def search(
        self, query: str, *, count: int, sites: Sequence[str] = (), language: str | None = None
    ) -> list[SearchResult]:
        count = max(count, 1)
        # with sites, ask for a full page: results off the sites are dropped afterwards
        asked = BRAVE_MAX_COUNT if sites else min(count, BRAVE_MAX_COUNT)
        params = {"q": with_sites(query, sites), "count": str(asked)}
        if language:
            params["search_lang"] = language.lower()
        assert self._secret
        request = self._client.build_request(
            "GET", f"{self.base_url}/web/search", params=params, headers={"x-subscription-token": self._secret}
        )
        body = await self._call(request)
        web = body.get("web") if isinstance(body, dict) else None
        items = web.get("results") if isinstance(web, dict) else []  # no "web" at all: no result
        return _results(items, "url", "description", sites, count)


class Tavily(ApiClient):
    """``POST {base}/search`` with ``Authorization: Bearer <key>`` and a JSON body (``query``,
    ``max_results``, ``include_domains``); results in ``results[]`` (``title``, ``url``,
    ``content``). Tavily has no language parameter: ``language`` is not sent."""

    name = "tavily"
    label = "Tavily"

    def __init__(self, config: SearchConfig) -> None:
        super().__init__(config.base_url or TAVILY_URL, config.api_key, config.timeout_s, follow_redirects=False)

    async def search(
        self, query: str, *, count: int, sites: Sequence[str] = (), language: str | None = None
    ) -> list[SearchResult]:
        count = max(count, 1)
        payload: dict[str, Any] = {
            "query": query,
            "max_results": min(count, TAVILY_MAX_COUNT),
            "search_depth": "basic",
            "topic": "general",
        }
        domains = list(dict.fromkeys(host for host, _prefix in map(site_parts, sites) if host))
        if domains:
            payload["include_domains"] = domains
        request = self._client.build_request(
            "POST", f"{self.base_url}/search", json=payload, headers={"authorization": f"Bearer {self._secret}"}
        )
        body = await self._call(request)
        items = body.get("results") if isinstance(body, dict) else None
        return _results(items, "url", "content", sites, count)
