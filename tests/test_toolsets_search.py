"""The search backends (SearXNG, Brave, Tavily) and the Wikipedia client against a real fake of
their APIs (tests/support/fake_web.py): what each sends (query, sites, count, language, key),
what it makes of the answers, and the SearchError each failure becomes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from opentess.toolsets.search import SearchConfig, SearchError, SearchResult, make_search_backend
from opentess.toolsets.wikipedia import ArticleNotFound, Wikipedia
from tests.support.fake_web import BRAVE_KEY, TAVILY_KEY, FakeWeb
from tests.support.processes import free_port

T = TypeVar("T")


@pytest.fixture(scope="module")
def web() -> Iterator[FakeWeb]:
    server = FakeWeb().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh(web: FakeWeb) -> None:
    web.reset()


def search(config: SearchConfig, query: str, **kwargs: object) -> list[SearchResult]:
    async def go() -> list[SearchResult]:
        backend = make_search_backend(config)
        try:
            return await backend.search(query, **kwargs)  # type: ignore[arg-type]
        finally:
            await backend.aclose()

    return asyncio.run(go())


def wiki(web: FakeWeb, use: Callable[[Wikipedia], Awaitable[T]], **kwargs: object) -> T:
    async def go() -> T:
        client = Wikipedia(web.url, **kwargs)  # type: ignore[arg-type]
        try:
            return await use(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def searxng(web: FakeWeb, **kwargs: object) -> SearchConfig:
    return SearchConfig("searxng", base_url=f"{web.url}/searxng", **kwargs)  # type: ignore[arg-type]


# SearXNG ------------------------------------------------------------------------------------------


def test_searxng_asks_the_json_api_and_keeps_count_results(web: FakeWeb) -> None:
    """GET {base}/search?q=…&format=json with the language; the first ``count`` results, their
    snippets as plain text (highlighting tags and entities gone)."""
    results = search(searxng(web), "lighthouse of alexandria", count=2, language="fr")
    assert results == [
        SearchResult("The Lighthouse of Alexandria", f"{web.url}/article",
                     "The Lighthouse of Alexandria stood & guided ships"),
        SearchResult("Pharos lighthouse : r/history", "https://www.reddit.com/r/history/comments/1/pharos/",
                     "A thread about the Pharos"),
    ]  # fmt: skip
    [sent] = web.received("/searxng/search")
    assert sent.query == {"q": "lighthouse of alexandria", "format": "json", "pageno": "1", "language": "fr"}
    assert sent.headers["Accept"] == "application/json"


def test_searxng_restricts_to_sites_in_the_query_and_in_the_results(web: FakeWeb) -> None:
    """Sites become ``site:`` terms (several joined by OR), and results off the sites are dropped
    even when the engines behind SearXNG ignored the terms; subdomains count as the site."""
    results = search(searxng(web), "pharos", count=5, sites=["reddit.com"])
    assert [r.url for r in results] == [
        "https://www.reddit.com/r/history/comments/1/pharos/",
        "https://old.reddit.com/r/lighthouses/",
    ]
    assert web.received("/searxng/search")[0].query["q"] == "pharos site:reddit.com"
    web.reset()
    results = search(searxng(web), "pharos", count=5, sites=["https://www.wikipedia.org/", "reddit.com/r/history"])
    assert [r.url for r in results] == [
        "https://www.reddit.com/r/history/comments/1/pharos/",
        "https://en.wikipedia.org/wiki/Lighthouse",
    ]
    assert web.received("/searxng/search")[0].query["q"] == "pharos site:wikipedia.org OR site:reddit.com/r/history"


@pytest.mark.parametrize(
    ("status", "hint"), [(403, "add json to search.formats"), (429, "server.limiter"), (502, "HTTP 502")]
)
def test_searxng_errors_say_what_to_fix(web: FakeWeb, status: int, hint: str) -> None:
    """A disabled JSON format (403) and the instance's rate limiter (429) are named with their fix."""
    web.fail_with = status
    with pytest.raises(SearchError, match=f"SearXNG at {web.url}/searxng: HTTP {status}") as caught:
        search(searxng(web), "pharos", count=3)
    assert hint in str(caught.value)


def test_a_backend_that_does_not_answer_in_time_is_a_search_error(web: FakeWeb) -> None:
    config = SearchConfig("searxng", base_url=f"{web.url}/slow", timeout_s=0.3)
    with pytest.raises(SearchError, match=r"no answer within 0.3 s"):
        search(config, "pharos", count=3)
    assert len(web.received("/slow/search")) == 1


def test_an_unreachable_backend_is_a_search_error() -> None:
    config = SearchConfig("searxng", base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SearchError, match=r"the request failed .*ConnectError"):
        search(config, "pharos", count=3)


# Brave -------------------------------------------------------------------------------------------


def test_brave_sends_the_key_count_and_language(web: FakeWeb) -> None:
    config = SearchConfig("brave", base_url=f"{web.url}/brave/res/v1", api_key=BRAVE_KEY)
    results = search(config, "lighthouse", count=3, language="EN")
    assert [r.title for r in results] == ["The Lighthouse of Alexandria", "Pharos lighthouse : r/history",
                                          "Keeper's notes"]  # fmt: skip
    assert results[0].snippet == "The Lighthouse of Alexandria stood & guided ships"
    [sent] = web.received("/brave/res/v1/web/search")
    assert sent.query == {"q": "lighthouse", "count": "3", "search_lang": "en"}
    assert sent.headers["X-Subscription-Token"] == BRAVE_KEY


def test_brave_with_sites_asks_a_full_page_and_keeps_the_sites(web: FakeWeb) -> None:
    config = SearchConfig("brave", base_url=f"{web.url}/brave/res/v1", api_key=BRAVE_KEY)
    results = search(config, "pharos", count=1, sites=["reddit.com"])
    assert [r.url for r in results] == ["https://www.reddit.com/r/history/comments/1/pharos/"]
    [sent] = web.received("/brave/res/v1/web/search")
    assert (sent.query["q"], sent.query["count"]) == ("pharos site:reddit.com", "20")


def test_brave_refusing_the_key_is_a_search_error_without_the_key(web: FakeWeb) -> None:
    """The API's own message is kept; the key sent is not in the error."""
    config = SearchConfig("brave", base_url=f"{web.url}/brave/res/v1", api_key="wrong-secret-key-789")
    with pytest.raises(SearchError) as caught:
        search(config, "pharos", count=3)
    assert str(caught.value) == "Brave Search: HTTP 401: The provided subscription token is invalid."
    assert "wrong-secret-key-789" not in repr(config)


# Tavily ------------------------------------------------------------------------------------------


def test_tavily_posts_the_query_domains_and_key(web: FakeWeb) -> None:
    config = SearchConfig("tavily", base_url=f"{web.url}/tavily", api_key=TAVILY_KEY)
    results = search(config, "pharos", count=4, sites=["https://www.reddit.com"], language="fr")
    assert [r.url for r in results] == [
        "https://www.reddit.com/r/history/comments/1/pharos/",
        "https://old.reddit.com/r/lighthouses/",
    ]
    [sent] = web.received("/tavily/search")
    assert sent.headers["Authorization"] == f"Bearer {TAVILY_KEY}"
    import json

    body = json.loads(sent.body)
    assert body == {"query": "pharos", "max_results": 4, "search_depth": "basic", "topic": "general",
                    "include_domains": ["reddit.com"]}  # fmt: skip


def test_tavily_refusing_the_key_is_a_search_error(web: FakeWeb) -> None:
    config = SearchConfig("tavily", base_url=f"{web.url}/tavily", api_key="tvly-wrong")
    with pytest.raises(SearchError, match=r"^Tavily: HTTP 401: Unauthorized: missing or invalid API key\.$"):
        search(config, "pharos", count=3)


def test_configurations_that_cannot_work_are_refused_naming_what_is_missing() -> None:
    with pytest.raises(ValueError, match="base_url"):
        make_search_backend(SearchConfig("searxng"))
    for provider in ("brave", "tavily"):
        with pytest.raises(ValueError, match="api_key_env"):
            make_search_backend(SearchConfig(provider))  # type: ignore[arg-type]


def test_brave_and_tavily_default_to_their_public_apis() -> None:
    async def bases() -> list[str]:
        backends = [make_search_backend(SearchConfig(p, api_key="k")) for p in ("brave", "tavily")]  # type: ignore[arg-type]
        for backend in backends:
            await backend.aclose()
        return [getattr(b, "base_url", "") for b in backends]

    assert asyncio.run(bases()) == ["https://api.search.brave.com/res/v1", "https://api.tavily.com"]


# Wikipedia ---------------------------------------------------------------------------------------


def test_wikipedia_search_gives_article_urls_and_plain_snippets(web: FakeWeb) -> None:
    results = wiki(web, lambda w: w.search("alexandria", count=5))
    assert results == [
        SearchResult("Lighthouse of Alexandria", f"{web.url}/wiki/Lighthouse_of_Alexandria",
                     "The Lighthouse of Alexandria & more"),
    ]  # fmt: skip
    [sent] = web.received("/w/api.php")
    assert sent.query == {
        "action": "query", "format": "json", "formatversion": "2", "utf8": "1",
        "list": "search", "srsearch": "alexandria", "srlimit": "5", "srprop": "snippet", "srnamespace": "0",
    }  # fmt: skip
    assert sent.headers["User-Agent"].startswith("opentess/")


def test_wikipedia_extract_by_title_or_url_follows_redirects_and_is_bounded(web: FakeWeb) -> None:
    text = wiki(web, lambda w: w.extract("Lighthouse of Alexandria", max_chars=10_000))
    assert text.startswith("The Lighthouse of Alexandria, sometimes called") and "== History ==" in text
    sent = web.received("/w/api.php")[0].query
    assert (sent["prop"], sent["explaintext"], sent["titles"], sent["redirects"]) == (
        "extracts", "1", "Lighthouse of Alexandria", "1")  # fmt: skip
    web.reset()
    by_url = wiki(web, lambda w: w.extract("https://en.wikipedia.org/wiki/Pharos_of_Alexandria", max_chars=30))
    assert by_url == text[:30]
    assert web.received("/w/api.php")[0].query["titles"] == "Pharos of Alexandria"


def test_a_missing_article_and_a_wiki_error_are_search_errors(web: FakeWeb) -> None:
    with pytest.raises(ArticleNotFound, match="no article titled 'Atlantis Lighthouse'"):
        wiki(web, lambda w: w.extract("Atlantis_Lighthouse", max_chars=100))
    with pytest.raises(ArticleNotFound, match="not the URL of a wiki article"):
        wiki(web, lambda w: w.extract("https://en.wikipedia.org/w/index.php", max_chars=100))
    web.fail_with = 200  # MediaWiki's errors come with HTTP 200
    with pytest.raises(SearchError, match="maxlag: Waiting for a database server"):
        wiki(web, lambda w: w.search("pharos", count=3))


def test_a_language_with_the_default_wiki_means_that_languages_wikipedia(web: FakeWeb) -> None:
    async def bases() -> list[str]:
        clients = [Wikipedia(language="fr"), Wikipedia(language="zh-yue"), Wikipedia(web.url, language="fr")]
        for client in clients:
            await client.aclose()
        return [c.base_url for c in clients]

    assert asyncio.run(bases()) == ["https://fr.wikipedia.org", "https://zh-yue.wikipedia.org", web.url]
    with pytest.raises(ValueError, match="not a Wikipedia language code"):
        Wikipedia(language="evil.example.com/")
