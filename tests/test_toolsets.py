"""Toolsets do what they name (issue #16): an agent offered ``no-tools``, ``internet``,
``wikipedia`` and ``agent`` answers from the (fake) web only when a search toolset is chosen,
cites it, records its sources and steps, and stays within its limits.

Everything runs against real HTTP servers on 127.0.0.1: the fake upstream (answering with
``tool_calls`` as OpenAI's API does, streamed and not, and answering from what it was sent), a
SearXNG-compatible search API, a MediaWiki API and web pages (tests/support/fake_web.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opentess.settings import BUILTIN_MODEL, ModelConfig, SearchTable, Settings, ToolsetTable, WikipediaTable
from opentess.toolsets.calculator import CalculatorError, calculate
from opentess.toolsets.registry import catalog, problems
from tests.support.fake_upstream import FakeUpstream
from tests.support.fake_web import ARTICLE_FACT, TEXT_FACT, FakeWeb
from tests.support.files_env import upload, wait_processed
from tests.support.isolated import isolated_world, with_settings
from tests.support.live import LiveServer
from tests.support.world import FAKE_MODEL, World, execution, make_settings

TOOL_MODEL = "tool-gpt"
QUESTION = "How tall was the Lighthouse of Alexandria?"
ANSWER = "It stood about one hundred metres tall [1]."
DONT_KNOW = "I do not know."
LOCAL_RESULTS = [
    ("The Lighthouse of Alexandria", "The Lighthouse of Alexandria stood and guided ships", "/article"),
    ("Keeper's notes", "Plain notes on the lighthouse", "/notes.txt"),
    ("Slow wonders", "A page that never answers", "/slow"),
    ("Moved", "A page that moved to a private address", "/redirect?to=http://10.1.2.3/secret"),
]


def parse_sse(text: str) -> list[str]:
    """The ``data:`` payloads of an event stream (keep-alive comments skipped)."""
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


class Web(FakeWeb):
    """The fake web with results of the test's choosing (pages of this server only: no test may
    reach a real site)."""

    results_override: list[tuple[str, str, str]] | None = None

    def _results(self) -> list[tuple[str, str, str]]:
        if self.results_override is None:
            return [r for r in super()._results() if r[2].startswith(self.url)]
        return [(title, snippet, self.url + path) for title, snippet, path in self.results_override]


@pytest.fixture(scope="module")
def fake_web() -> Iterator[Web]:
    server = Web().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_web(fake_web: Web) -> None:
    fake_web.reset()
    fake_web.results_override = list(LOCAL_RESULTS)


def _settings(upstream: FakeUpstream, web: Web) -> dict[str, Any]:
    base = make_settings(Path("."), upstream.url).models
    tool_model = ModelConfig(
        provider="openai",
        base_url=f"{upstream.url}/v1",
        api_key="sk-upstream-secret",
        upstream_model="gpt-upstream",
        input_price=1.5,
        output_price=4.0,
        supports_tools=True,
    )
    return {
        "models": {**base, TOOL_MODEL: tool_model},
        "search": SearchTable(provider="searxng", base_url=f"{web.url}/searxng", results=5, pages=3),
        "wikipedia": WikipediaTable(base_url=web.url, results=2),
        "fetch_allow_hosts": web.allow,
        "fetch_timeout_s": 3.0,
        "toolsets": {
            # the built-in internet toolset, priced
            "internet": ToolsetTable(kind="internet", credits_per_search=0.01, credits_per_page=0.002),
            "local": ToolsetTable(kind="internet", sites=["127.0.0.1"], description="This server's pages"),
        },
    }


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def tworld(
    request: pytest.FixtureRequest, upstream: FakeUpstream, fake_web: Web, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with isolated_world(
        request.param, tmp_path_factory.mktemp("toolsets"), upstream.url, **_settings(upstream, fake_web)
    ) as world:
        yield world


@pytest.fixture(scope="module")
def server(tworld: World) -> Iterator[LiveServer]:
    live = LiveServer(tworld.settings).start()
    yield live
    live.stop()


@pytest.fixture
def client(server: LiveServer, tworld: World) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {tworld.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as http:
        yield http


def _agent(http: httpx.Client, tools: list[str], models: list[str] | None = None, default: str = "no-tools") -> int:
    resp = http.post(
        "/agents",
        json={
            "title": "Researcher",
            "instructions": "You answer questions about wonders of the world.",
            "questions": [
                {"type": "select", "name": "model", "options": models or [FAKE_MODEL]},
                {"type": "select", "name": "tools", "options": tools, "default": default},
            ],
        },
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _system(body: dict[str, Any]) -> str:
    messages = body["messages"]
    return str(messages[0]["content"]) if messages and messages[0]["role"] == "system" else ""


def _answers_from_sources(body: dict[str, Any]) -> str | dict[str, Any]:
    """A model that knows only what it is given: it answers from the article when its context
    holds the article, else it does not know."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("function", {}).get("name") == "search":
        return {"tool_calls": [("search", {"query": "Pharos lighthouse height"})]}
    return ANSWER if ARTICLE_FACT in _system(body) else DONT_KNOW


def _chat(http: httpx.Client, agent_id: int, **body: Any) -> httpx.Response:
    return http.post(
        f"/agents/{agent_id}/openai/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], **body},
    )


# saving agents -------------------------------------------------------------------------------------


def test_saving_an_agent_checks_its_toolsets(client: httpx.Client) -> None:
    def save(tools: list[str], models: list[str], default: str | None = None) -> httpx.Response:
        tools_question: dict[str, Any] = {"type": "select", "name": "tools", "options": tools}
        if default:
            tools_question["default"] = default
        return client.post(
            "/agents",
            json={"title": "t", "questions": [{"type": "select", "name": "model", "options": models}, tools_question]},
        )

    unknown = save(["no-tools", "telepathy"], [FAKE_MODEL])
    assert unknown.status_code == 422
    assert "unknown toolset(s) telepathy" in json.dumps(unknown.json()) and "wikipedia" in json.dumps(unknown.json())
    no_tool_calls = save(["no-tools", "agent"], [FAKE_MODEL])
    assert no_tool_calls.status_code == 422 and "supports_tools = true" in json.dumps(no_tool_calls.json())
    default_cannot = save(["agent", "no-tools"], [FAKE_MODEL, TOOL_MODEL], default="agent")
    assert default_cannot.status_code == 422 and f"default model {FAKE_MODEL}" in json.dumps(default_cannot.json())
    fine = save(["no-tools", "internet", "wikipedia", "agent", "reddit", "local"], [TOOL_MODEL, FAKE_MODEL])
    assert fine.status_code == 201, fine.text
    # GET /agents/{id} shows the options as saved
    shown = client.get(f"/agents/{fine.json()['id']}").json()
    tools = next(q for q in shown["questions"] if q["name"] == "tools")
    assert tools["options"] == ["no-tools", "internet", "wikipedia", "agent", "reddit", "local"]


def test_search_toolsets_need_a_search_backend(http: httpx.Client) -> None:
    """The session's server has no [search]: an agent offering internet is refused, naming it."""
    resp = http.post(
        "/agents",
        json={"title": "t", "questions": [{"type": "select", "name": "tools", "options": ["no-tools", "internet"]}]},
    )
    assert resp.status_code == 422
    assert "[search]" in json.dumps(resp.json())
    # wikipedia needs none
    ok = http.post(
        "/agents",
        json={"title": "t", "questions": [{"type": "select", "name": "tools", "options": ["no-tools", "wikipedia"]}]},
    )
    assert ok.status_code == 201, ok.text


def test_tess_names_ship_predeclared_and_tables_add_more() -> None:
    settings = Settings(toolsets={"docs": ToolsetTable(kind="internet", sites=["docs.python.org"])})
    found = catalog(settings)
    for name in ("no-tools", "internet", "wikipedia", "agent", "twitter", "reddit", "linkedin", "quora", "medium"):
        assert name in found
    assert found["reddit"].sites == ("reddit.com",) and found["reddit"].mode == "grounded"
    assert found["docs"].sites == ("docs.python.org",)
    assert problems(["docs"], ["smollm2-135m"], settings)  # no [search] here


# grounded mode --------------------------------------------------------------------------------------


def test_internet_answers_from_the_pages_and_cites_them(
    client: httpx.Client, upstream: FakeUpstream, fake_web: Web, tworld: World
) -> None:
    upstream.responder = _answers_from_sources
    agent = _agent(client, ["no-tools", "internet"])

    alone = _chat(client, agent)
    assert alone.status_code == 200, alone.text
    assert alone.json()["choices"][0]["message"]["content"] == DONT_KNOW
    assert alone.json()["agent_response"]["sources"] == []
    assert fake_web.received("/searxng/search") == []

    resp = _chat(client, agent, tools="internet")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["choices"][0]["message"]["content"] == ANSWER
    # the search: the latest user message (this model does not rewrite queries), as JSON
    (search,) = fake_web.received("/searxng/search")
    assert search.query["q"] == QUESTION and search.query["format"] == "json"
    # the top three results' pages were read: the article, the notes, and the slow page (left out)
    read = {r.path for r in fake_web.received() if r.path in ("/article", "/notes.txt", "/slow")}
    assert read == {"/article", "/notes.txt", "/slow"}
    system = _system(upstream.last)
    assert "## Sources" in system and "[1] The Lighthouse of Alexandria" in system and TEXT_FACT in system
    assert "Accept all cookies" not in system  # the page's main text, not its boilerplate
    sources = body["agent_response"]["sources"]
    assert [s["index"] for s in sources] == [1, 2, 3, 4]
    assert sources[0] == {
        "index": 1,
        "title": "The Lighthouse of Alexandria",
        "url": fake_web.page("/article"),
        "snippet": "The Lighthouse of Alexandria stood and guided ships",
    }

    stored = client.get(f"/agent-responses/{body['agent_response']['id']}").json()
    assert stored["sources"] == sources
    steps = stored["steps"]
    assert [s["tool"] for s in steps] == ["web_search", "read_url", "read_url", "read_url"]
    assert steps[0]["arguments"] == {"query": QUESTION} and steps[0]["error"] is None
    assert {s["arguments"]["url"] for s in steps[1:]} == {fake_web.page(p) for p in ("/article", "/notes.txt", "/slow")}
    slow = next(s for s in steps if s["arguments"].get("url", "").endswith("/slow"))
    assert "3 s" in slow["error"] and slow["result_chars"] == 0
    article = next(s for s in steps if s["arguments"].get("url", "").endswith("/article"))
    assert article["error"] is None and article["result_chars"] > len(ARTICLE_FACT)
    assert all(isinstance(s["duration_ms"], float) for s in steps)
    # credits: the model's tokens, one search at 0.01 and two pages read at 0.002
    model_credits = alone.json()["agent_response"]["credits"]
    assert stored["credits"] == pytest.approx(model_credits + 0.01 + 2 * 0.002)


def test_a_failed_search_or_page_never_fails_the_run(
    client: httpx.Client, upstream: FakeUpstream, fake_web: Web
) -> None:
    upstream.responder = _answers_from_sources
    agent = _agent(client, ["no-tools", "internet"])
    fake_web.results_override = [
        ("Moved", "A page that moved to a private address", "/redirect?to=http://10.1.2.3/secret"),
        ("Huge", "A very large page", "/huge"),
    ]
    resp = _chat(client, agent, tools="internet")
    assert resp.status_code == 200, resp.text
    steps = client.get(f"/agent-responses/{resp.json()['agent_response']['id']}").json()["steps"]
    moved = next(s for s in steps if "redirect" in s["arguments"].get("url", ""))
    assert "10.1.2.3" in moved["error"] and "OPENTESS_FETCH_ALLOW_HOSTS" in moved["error"]
    huge = next(s for s in steps if s["arguments"].get("url", "").endswith("/huge"))
    assert huge["error"] is None  # read up to OPENTESS_FETCH_MAX_BYTES, not refused

    fake_web.fail_with = 500
    failed = _chat(client, agent, tools="internet")
    assert failed.status_code == 200, failed.text
    assert "The search failed" in _system(upstream.last)
    record = client.get(f"/agent-responses/{failed.json()['agent_response']['id']}").json()
    assert record["status"] == "succeeded" and record["sources"] == []
    assert record["steps"][0]["tool"] == "web_search" and "500" in record["steps"][0]["error"]


def test_a_tool_calling_model_rewrites_the_query(client: httpx.Client, upstream: FakeUpstream, fake_web: Web) -> None:
    upstream.responder = _answers_from_sources
    agent = _agent(client, ["no-tools", "internet"], models=[TOOL_MODEL])
    resp = _chat(client, agent, tools="internet")
    assert resp.status_code == 200, resp.text
    assert fake_web.received("/searxng/search")[0].query["q"] == "Pharos lighthouse height"
    rewrite = upstream.requests[0]["body"]
    assert rewrite["tool_choice"] == {"type": "function", "function": {"name": "search"}}
    assert rewrite["messages"][-1] == {"role": "user", "content": QUESTION}
    steps = client.get(f"/agent-responses/{resp.json()['agent_response']['id']}").json()["steps"]
    assert steps[0]["tool"] == "rewrite_query" and steps[0]["arguments"]["query"] == "Pharos lighthouse height"
    # both model calls' tokens are counted
    assert resp.json()["usage"]["prompt_tokens"] == 22


def test_site_restricted_toolsets_search_their_sites(
    client: httpx.Client, upstream: FakeUpstream, fake_web: Web
) -> None:
    upstream.responder = _answers_from_sources
    fake_web.results_override = None  # the fake's own results, this server's pages only
    agent = _agent(client, ["no-tools", "local"])
    resp = _chat(client, agent, tools="local")
    assert resp.status_code == 200, resp.text
    assert "site:127.0.0.1" in fake_web.received("/searxng/search")[0].query["q"]
    sources = resp.json()["agent_response"]["sources"]
    assert sources and all(s["url"].startswith(fake_web.url) for s in sources)


def test_wikipedia_grounds_on_the_mediawiki_api(client: httpx.Client, upstream: FakeUpstream, fake_web: Web) -> None:
    upstream.responder = lambda body: "Built around 280 BC [1]." if "280 BC" in _system(body) else DONT_KNOW
    agent = _agent(client, ["no-tools", "wikipedia"])
    body = {"messages": [{"role": "user", "content": "lighthouse alexandria"}], "tools": "wikipedia"}
    resp = client.post(f"/agents/{agent}/openai/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "Built around 280 BC [1]."
    sources = resp.json()["agent_response"]["sources"]
    assert sources[0]["title"] == "Lighthouse of Alexandria"
    assert sources[0]["url"] == f"{fake_web.url}/wiki/Lighthouse_of_Alexandria"
    searches = [r for r in fake_web.received("/w/api.php") if r.query.get("list") == "search"]
    assert searches[0].query["srsearch"] == "lighthouse alexandria"


def test_grounded_streams_on_both_routes(client: httpx.Client, upstream: FakeUpstream, fake_web: Web) -> None:
    upstream.responder = _answers_from_sources
    agent = _agent(client, ["no-tools", "internet"])
    with client.stream(
        "POST",
        f"/agents/{agent}/openai/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "tools": "internet", "stream": True},
    ) as resp:
        events = parse_sse(resp.read().decode())
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == ANSWER
    assert chunks[-1]["agent_response"]["sources"][0]["url"] == fake_web.page("/article")

    with client.stream(
        "POST",
        f"/agents/{agent}/execute",
        json={"messages": [{"role": "user", "content": QUESTION}], "tools": "internet", "stream": True},
    ) as resp:
        native = [json.loads(e) for e in parse_sse(resp.read().decode())]
    steps = [e["step"] for e in native if "step" in e]
    assert [s["tool"] for s in steps] == ["web_search", "read_url", "read_url", "read_url"]
    assert all(e["status"] == "running" and e["output"] == "" for e in native if "step" in e)
    assert "".join(e["output"] for e in native if e["status"] == "running") == ANSWER
    completed = native[-1]
    assert completed["status"] == "completed" and len(completed["sources"]) == 4 and len(completed["steps"]) == 4


# the agent mode ------------------------------------------------------------------------------------


def _researcher(article_url: str) -> Any:
    """A tool-calling model: it searches and computes, reads the first result, then answers from
    what the tools returned."""

    def respond(body: dict[str, Any]) -> str | dict[str, Any]:
        tool_messages = [m for m in body["messages"] if m["role"] == "tool"]
        if body.get("tool_choice") == "none":
            return "Out of steps; here is what I have."
        if not tool_messages:
            return {
                "tool_calls": [
                    ("web_search", {"query": "lighthouse of alexandria height"}),
                    ("calculator", {"expression": "100 * 3.28084"}),
                ]
            }
        if len(tool_messages) == 2:
            return {"content": "Reading the article.", "tool_calls": [("read_url", {"url": article_url})]}
        found = "\n".join(m["content"] for m in tool_messages)
        if ARTICLE_FACT in found and "328.084" in found:
            return "About one hundred metres, 328.084 feet [1]."
        return DONT_KNOW

    return respond


@pytest.mark.parametrize("stream", [False, True])
def test_the_agent_loop_calls_tools_and_answers(
    client: httpx.Client, upstream: FakeUpstream, fake_web: Web, stream: bool
) -> None:
    upstream.responder = _researcher(fake_web.page("/article"))
    agent = _agent(client, ["agent", "no-tools"], models=[TOOL_MODEL], default="agent")
    body = {"messages": [{"role": "user", "content": QUESTION}], "stream": stream}
    if stream:
        with client.stream("POST", f"/agents/{agent}/openai/chat/completions", json=body) as resp:
            chunks = [json.loads(e) for e in parse_sse(resp.read().decode()) if e != "[DONE]"]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        response = chunks[-1]["agent_response"]
    else:
        resp = client.post(f"/agents/{agent}/openai/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        text = resp.json()["choices"][0]["message"]["content"]
        response = resp.json()["agent_response"]
        assert resp.json()["choices"][0]["finish_reason"] == "stop"
    # the model's words before its last tool call are part of the answer, as they were shown
    assert text == "Reading the article.About one hundred metres, 328.084 feet [1]."
    # what the upstream received: the platform tools, then each tool's result under its call id
    first = upstream.requests[0]["body"]
    offered = {t["function"]["name"] for t in first["tools"]}
    assert {"web_search", "read_url", "wikipedia_search", "calculator", "current_time"} <= offered
    assert first["tool_choice"] == "auto" and first.get("stream", False) == stream
    second = upstream.requests[1]["body"]["messages"]
    calls = second[-3]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["web_search", "calculator"]
    assert second[-2]["tool_call_id"] == calls[0]["id"] and "[1] The Lighthouse of Alexandria" in second[-2]["content"]
    assert second[-1] == {"role": "tool", "tool_call_id": calls[1]["id"], "content": "328.084"}
    assert len(upstream.requests) == 3

    stored = client.get(f"/agent-responses/{response['id']}").json()
    assert [(s["tool"], s["arguments"]) for s in stored["steps"]] == [
        ("web_search", {"query": "lighthouse of alexandria height"}),
        ("calculator", {"expression": "100 * 3.28084"}),
        ("read_url", {"url": fake_web.page("/article")}),
    ]
    assert all(s["error"] is None and s["result_chars"] > 0 for s in stored["steps"])
    assert stored["sources"][0]["url"] == fake_web.page("/article") == response["sources"][0]["url"]
    assert stored["output"] == text


def test_the_native_stream_says_which_step_is_under_way(
    client: httpx.Client, upstream: FakeUpstream, fake_web: Web
) -> None:
    upstream.responder = _researcher(fake_web.page("/article"))
    agent = _agent(client, ["agent", "no-tools"], models=[TOOL_MODEL], default="agent")
    with client.stream(
        "POST", f"/agents/{agent}/execute", json={"messages": [{"role": "user", "content": QUESTION}], "stream": True}
    ) as resp:
        events = [json.loads(e) for e in parse_sse(resp.read().decode())]
    steps = [e["step"] for e in events if "step" in e]
    assert [(s["index"], s["tool"]) for s in steps] == [(1, "web_search"), (2, "calculator"), (3, "read_url")]
    assert events[-1]["status"] == "completed" and [s["tool"] for s in events[-1]["steps"]] == [
        "web_search",
        "calculator",
        "read_url",
    ]


def test_the_agent_loop_stays_within_its_steps(tworld: World, upstream: FakeUpstream, fake_web: Web) -> None:
    """A model that never stops calling tools gets three steps here, then must answer."""
    upstream.responder = lambda body: (
        "Out of steps; here is what I have."
        if body.get("tool_choice") == "none"
        else {"tool_calls": [("current_time", {"timezone": "America/Sao_Paulo"})]}
    )
    bounded = LiveServer(with_settings(tworld, agent_max_steps=3).settings).start()
    try:
        with httpx.Client(
            base_url=bounded.url, headers={"Authorization": f"Bearer {tworld.token}"}, timeout=60
        ) as http:
            agent = _agent(http, ["agent", "no-tools"], models=[TOOL_MODEL], default="agent")
            resp = http.post(
                f"/agents/{agent}/openai/chat/completions", json={"messages": [{"role": "user", "content": "time?"}]}
            )
            assert resp.status_code == 200, resp.text
            assert resp.json()["choices"][0]["message"]["content"] == "Out of steps; here is what I have."
            stored = http.get(f"/agent-responses/{resp.json()['agent_response']['id']}").json()
    finally:
        bounded.stop()
    assert [s["tool"] for s in stored["steps"]] == ["current_time"] * 3
    last = upstream.last
    assert last["tool_choice"] == "none" and "answer now" in _system(last)
    assert len(upstream.requests) == 4
    tool_results = [m["content"] for m in last["messages"] if m["role"] == "tool"]
    assert all("America/Sao_Paulo" in r for r in tool_results)


def test_agent_tool_errors_go_back_to_the_model(client: httpx.Client, upstream: FakeUpstream) -> None:
    def respond(body: dict[str, Any]) -> str | dict[str, Any]:
        tool_messages = [m for m in body["messages"] if m["role"] == "tool"]
        if not tool_messages:
            return {
                "tool_calls": [
                    ("calculator", {"expression": "__import__('os').system('id')"}),
                    ("read_url", {"url": "http://169.254.169.254/latest/meta-data/"}),
                    ("teleport", {"to": "mars"}),
                ]
            }
        return "Errors: " + " | ".join(m["content"][:40] for m in tool_messages)

    upstream.responder = respond
    agent = _agent(client, ["agent", "no-tools"], models=[TOOL_MODEL], default="agent")
    resp = _chat(client, agent)
    assert resp.status_code == 200, resp.text
    stored = client.get(f"/agent-responses/{resp.json()['agent_response']['id']}").json()
    errors = {s["tool"]: s["error"] for s in stored["steps"]}
    assert "only numbers" in errors["calculator"]
    assert "169.254.169.254" in errors["read_url"]
    assert "no tool 'teleport'" in errors["teleport"]
    assert resp.json()["choices"][0]["message"]["content"].count("Error:") == 3


def test_agent_at_call_time_with_a_model_that_cannot_call_tools(client: httpx.Client, upstream: FakeUpstream) -> None:
    agent = _agent(client, ["no-tools", "agent"], models=[TOOL_MODEL, FAKE_MODEL])
    resp = _chat(client, agent, tools="agent", model=FAKE_MODEL)
    assert resp.status_code == 422 or resp.status_code == 400, resp.text
    assert FAKE_MODEL in resp.json()["error"]["message"]
    assert upstream.requests == []
    native = client.post(
        f"/agents/{agent}/execute",
        json={"messages": [{"role": "user", "content": "hi"}], "tools": "agent", "model": FAKE_MODEL},
    )
    assert native.status_code == 422 and FAKE_MODEL in json.dumps(native.json()["errors"]["tools"])


# the calculator -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("0.1 + 0.2", "0.3"),
        ("2 ** 100", "1267650600228229401496703205376"),
        ("1/3", "1/3 ≈ 0.333333333333333333333333333333"),
        ("(1.5 + 2) * 3 / 7", "1.5"),
        ("2^10", "1024"),
        ("sqrt(16) + abs(-2)", "6"),
        ("round(2/3, 4)", "0.6667"),
        ("max(3, 7) % 4", "3"),
        ("-7 // 2", "-4"),
    ],
)
def test_the_calculator_is_exact(expression: str, result: str) -> None:
    assert calculate(expression) == result


@pytest.mark.parametrize(
    "expression",
    [
        "9**9**9",
        "10**1001",
        "1/0",
        "__import__('os')",
        "open('/etc/passwd')",
        "(lambda: 1)()",
        "x + 1",
        "",
        "1 if 1 else 2",
    ],
)
def test_the_calculator_refuses_what_is_not_bounded_arithmetic(expression: str) -> None:
    with pytest.raises(CalculatorError):
        calculate(expression)


# tenancy --------------------------------------------------------------------------------------------


def test_knowledge_and_memory_tools_see_only_the_callers(
    server: LiveServer, tworld: World, client: httpx.Client, upstream: FakeUpstream
) -> None:
    """Bob's files and memories never reach Alice's agent, through the tools or a file id."""
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {tworld.other_token}"}, timeout=60
    ) as bob:
        bob_file = upload(bob, "bob-vault.txt", b"The vault code is BRAVO-9920.").json()["id"]
        assert wait_processed(bob, bob_file)["status"] == "completed"
        bob_agent = _agent(bob, ["no-tools"])
        assert bob.post(f"/agents/{bob_agent}/files", json={"file_ids": [bob_file]}).status_code == 200
        assert bob.post("/memories", json={"memory": "My favourite colour is teal."}).status_code == 201
    alice_file = upload(client, "alice-vault.txt", b"The vault code is ALPHA-4471.").json()["id"]
    assert wait_processed(client, alice_file)["status"] == "completed"
    assert client.post("/memories", json={"memory": "My favourite colour is amber."}).status_code == 201
    agent = _agent(client, ["agent", "no-tools"], models=[TOOL_MODEL], default="agent")
    assert client.post(f"/agents/{agent}/files", json={"file_ids": [alice_file]}).status_code == 200

    def respond(body: dict[str, Any]) -> str | dict[str, Any]:
        tool_messages = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if not tool_messages:
            return {
                "tool_calls": [
                    ("knowledge_search", {"query": "vault code"}),
                    ("memory_search", {"query": "favourite colour"}),
                ]
            }
        return " || ".join(tool_messages)

    upstream.responder = respond
    resp = _chat(client, agent)
    assert resp.status_code == 200, resp.text
    answer = resp.json()["choices"][0]["message"]["content"]
    assert "ALPHA-4471" in answer and "amber" in answer
    assert "BRAVO" not in answer and "teal" not in answer
    assert "[alice-vault.txt" in answer
    # a file of another workspace cannot be named either
    foreign = _chat(client, agent, file_ids=[bob_file])
    assert foreign.status_code in (400, 422) and "file_ids" in foreign.text


@pytest.mark.model
def test_the_embedded_model_answers_grounded(client: httpx.Client, tworld: World, fake_web: Web) -> None:
    """SmolLM2 in-process with the internet toolset: the sources fit its 2,048-token context with
    room for the answer, and the run is stored with them."""
    agent = _agent(client, ["no-tools", "internet"], models=[BUILTIN_MODEL])
    resp = _chat(client, agent, tools="internet", max_tokens=48)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"].strip()
    execution_id = resp.json()["agent_response"]["id"]
    stored = execution(tworld.settings, execution_id)
    system = stored["messages"][0]["content"]
    assert "## Sources" in system and ARTICLE_FACT in system
    assert stored["sources"][0]["url"] == fake_web.page("/article")
    assert stored["status"] == "succeeded" and stored["prompt_tokens"] < 2048 - 48


def test_the_openai_stream_keeps_alive_while_a_tool_runs(tworld: World, upstream: FakeUpstream, fake_web: Web) -> None:
    """After the model's first words, a slow page read (it ends at the fetch timeout) keeps the
    stream quiet for a while: keep-alive comments flow meanwhile, then the answer goes on."""

    def respond(body: dict[str, Any]) -> str | dict[str, Any]:
        if not any(m["role"] == "tool" for m in body["messages"]):
            return {"content": "Reading.", "tool_calls": [("read_url", {"url": fake_web.page("/slow")})]}
        return "Done."

    upstream.responder = respond
    chatty = LiveServer(with_settings(tworld, sse_keepalive_s=0.05).settings).start()
    try:
        headers = {"Authorization": f"Bearer {tworld.token}"}
        with httpx.Client(base_url=chatty.url, headers=headers, timeout=60) as http:
            agent = _agent(http, ["agent", "no-tools"], models=[TOOL_MODEL], default="agent")
            body = {"messages": [{"role": "user", "content": QUESTION}], "stream": True}
            with http.stream("POST", f"/agents/{agent}/openai/chat/completions", json=body) as resp:
                lines = [line for line in resp.iter_lines() if line]
    finally:
        chatty.stop()
    contents = [i for i, line in enumerate(lines) if '"content":"' in line and '"content":""' not in line]
    first, last = contents[0], contents[-1]
    assert '"Reading."' in lines[first] and '"Done."' in lines[last]
    assert ": keep-alive" in lines[first + 1 : last]
    assert lines[-1] == "data: [DONE]"
