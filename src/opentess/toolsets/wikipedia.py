"""Wikipedia (or any MediaWiki) over its Action API: full-text search and an article's plain text.

- search: ``action=query&list=search`` → titles and snippets, each with the article's URL
  (``{base}/wiki/Title``);
- extract: ``action=query&prop=extracts&explaintext=1`` (the TextExtracts extension, installed on
  every Wikimedia wiki) → the article as plain text, section titles kept as ``== Title ==`` lines.

The wiki is configured by the operator, so it is called like the search backends (an ordinary
httpx client); an article URL given to ``extract`` only names a title on that wiki, its host is
never called. Wikimedia asks API clients for a descriptive User-Agent: ``user_agent`` lets an
operator add contact details to it."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from opentess.toolsets.search import USER_AGENT, ApiClient, SearchError, SearchResult, plain

DEFAULT_BASE_URL = "https://en.wikipedia.org"
MAX_COUNT = 50
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{1,12})*$")


class ArticleNotFound(SearchError):
    """The wiki has no article by that title."""


class Wikipedia(ApiClient):
    name = "wikipedia"

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        language: str | None = None,
        timeout_s: float = 10.0,
        *,
        user_agent: str | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        if language and base == DEFAULT_BASE_URL:
            # a language with the default wiki means that language's Wikipedia; a base_url of
            # the operator's own says which wiki (and so which language) already
            code = language.strip().lower()
            if not _LANGUAGE.match(code):
                raise ValueError(f"{language!r} is not a Wikipedia language code (en, fr, pt, zh-yue, …).")
            base = f"https://{code}.wikipedia.org"
        super().__init__(base, None, timeout_s, follow_redirects=True)
        self.label = f"Wikipedia at {self.base_url}" if self.base_url != DEFAULT_BASE_URL else "Wikipedia"
        if user_agent:
            self._client.headers["user-agent"] = f"{user_agent} {USER_AGENT}"

    def article_url(self, title: str) -> str:
        return f"{self.base_url}/wiki/{quote(title.replace(' ', '_'), safe='/:(),!*@$;')}"

    def title_of(self, title_or_url: str) -> str:
        """The article title a title or an article URL (``/wiki/Title`` or ``?title=Title``) names."""
        text = title_or_url.strip()
        if text.lower().startswith(("http://", "https://")):
            parts = urlsplit(text)
            if parts.path.startswith("/wiki/"):
                text = unquote(parts.path[len("/wiki/") :])
            elif parse_qs(parts.query).get("title"):
                text = parse_qs(parts.query)["title"][0]
            else:
                raise ArticleNotFound(f"{title_or_url} is not the URL of a wiki article (/wiki/Title).")
        text = text.replace("_", " ").strip()
        if not text:
            raise ArticleNotFound("No article title was given.")
        return text

    async def _query(self, params: dict[str, str]) -> dict[str, Any]:
        params = {"action": "query", "format": "json", "formatversion": "2", "utf8": "1", **params}
        body = await self._call(self._client.build_request("GET", f"{self.base_url}/w/api.php", params=params))
        if not isinstance(body, dict):
            raise self._fail("the answer is not a MediaWiki API object")
        error = body.get("error")
        if isinstance(error, dict):  # MediaWiki answers its errors with HTTP 200
            raise self._fail(f"{error.get('code', 'error')}: {plain(error.get('info'))}")
        query = body.get("query")
        return query if isinstance(query, dict) else {}

    async def search(self, query: str, *, count: int) -> list[SearchResult]:
        """Articles matching ``query``, best first, with a plain-text snippet each."""
        found = await self._query(
            {
                "list": "search",
                "srsearch": query,
                "srlimit": str(min(max(count, 1), MAX_COUNT)),
                "srprop": "snippet",
                "srnamespace": "0",
            }
        )
        results: list[SearchResult] = []
        for item in found.get("search") or []:
            title = item.get("title") if isinstance(item, dict) else None
            if isinstance(title, str) and title:
                results.append(SearchResult(title, self.article_url(title), plain(item.get("snippet"))))
        return results[: max(count, 1)]

    async def extract(self, title_or_url: str, *, max_chars: int) -> str:
        """The article's plain text (redirects followed), at most ``max_chars`` characters;
        ArticleNotFound when there is no such article."""
        title = self.title_of(title_or_url)
        found = await self._query({"prop": "extracts", "explaintext": "1", "redirects": "1", "titles": title})
        pages = found.get("pages") or []
        page = pages[0] if isinstance(pages, list) and pages and isinstance(pages[0], dict) else {}
        if not page or page.get("missing") or page.get("invalid"):
            raise ArticleNotFound(f"{self.label} has no article titled {title!r}.")
        text = page.get("extract")
        return text[:max_chars] if isinstance(text, str) else ""
