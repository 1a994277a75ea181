"""Agent webhooks against real receivers started by the tests: Tess's shapes, deliveries signed
as Standard Webhooks (verified with the ``standardwebhooks`` package), at least once and never
lost (a receiver down at first, a server restart between attempts, ends this process did not
see), the counters, disabling after failures, the address rules at registration and at
delivery, bad input on every route, and tenancy between users and workspaces."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from opentess.api import webhook_schemas as ws
from opentess.db.engine import make_engine
from opentess.store import Store, close_store
from opentess.webhooks import safety
from tests.support.fake_upstream import FakeUpstream
from tests.support.isolated import isolated_world, with_settings
from tests.support.live import LiveServer
from tests.support.processes import free_port
from tests.support.receiver import Receiver
from tests.support.tls import self_signed
from tests.support.waiting import wait_until
from tests.support.world import FAKE_MODEL, World

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
ROOT = Path(__file__).resolve().parent.parent
FAST = {
    "webhook_allow_hosts": ["127.0.0.1"],
    "jobs_backoff_scale": 0.0001,  # the nine attempts of a delivery within ~8 s
    "jobs_poll_s": 0.05,
    "webhook_sweep_s": 0.2,
    "webhook_timeout_s": 1.0,
    "webhook_disable_after": 2,
}


class Hooked:
    """A server of its own (its own database, the settings above) and clients on it."""

    def __init__(self, world: World, server: LiveServer) -> None:
        self.world = world
        self.server = server
        auth = {"Authorization": f"Bearer {world.token}"}
        self.http = httpx.Client(base_url=server.url, headers=auth, timeout=60)
        self.bob = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {world.other_token}"})

    def agent(self, title: str, client: httpx.Client | None = None) -> int:
        """A chat agent of its own on the fake upstream, so that no other test's executions reach
        a test's webhooks."""
        spec = {
            "title": title,
            "instructions": "Be brief.",
            "questions": [{"type": "select", "name": "model", "options": [FAKE_MODEL, "dead-upstream"]}],
        }
        resp = (client or self.http).post("/agents", json=spec)
        assert resp.status_code == 201, resp.text
        return int(resp.json()["id"])

    def hook(self, agent_id: int, url: str, **fields: Any) -> dict[str, Any]:
        resp = self.http.post(f"/agents/{agent_id}/webhooks", json={"url": url, **fields})
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def run(self, agent_id: int, **fields: Any) -> dict[str, Any]:
        resp = self.http.post(f"/agents/{agent_id}/execute?waitExecution=true", json={**CHAT, **fields})
        assert resp.status_code == 200, resp.text
        return dict(resp.json()["responses"][0])

    def deliveries(self, webhook_id: int) -> list[dict[str, Any]]:
        resp = self.http.get(f"/webhooks/{webhook_id}/deliveries", params={"per_page": 100})
        assert resp.status_code == 200, resp.text
        return list(resp.json()["data"])

    def webhook(self, webhook_id: int) -> dict[str, Any]:
        return dict(self.http.get(f"/webhooks/{webhook_id}").json())

    def close(self) -> None:
        self.http.close()
        self.bob.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hooked(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hooked]:
    with isolated_world(request.param, tmp_path_factory.mktemp("hooks"), upstream.url, **FAST) as world:
        server = LiveServer(world.settings).start()
        env = Hooked(world, server)
        try:
            yield env
        finally:
            env.close()
            server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().start() as found:
        yield found


def _verified(secret: str, got: Any) -> Any:
    return Webhook(secret).verify(got.body, got.headers)


def test_register_list_delete_in_tess_shapes(hooked: Hooked, receiver: Receiver) -> None:
    """Registering with only a url (as the Pareto n8n node does) gives POST and active; the
    answer shows the secret once; listings show the counters and never the secret."""
    agent = hooked.agent("Shapes")
    created = hooked.hook(agent, receiver.url)
    assert set(created) == {
        "id", "template_id", "user_id", "url", "method", "status", "created_at", "updated_at", "secret",
    }  # fmt: skip
    assert (created["template_id"], created["user_id"], created["url"]) == (agent, hooked.world.user_id, receiver.url)
    assert (created["method"], created["status"]) == ("POST", "active") and created["secret"].startswith("whsec_")
    ws.WebhookCreated.model_validate(created)
    other = hooked.hook(agent, receiver.url + "?kind=get", method="get", status="inactive")
    assert (other["method"], other["status"]) == ("GET", "inactive")

    page = hooked.http.get(f"/agents/{agent}/webhooks").json()
    ws.WebhookPage.model_validate(page)
    assert page["total"] == 2 and [w["id"] for w in page["data"]] == [created["id"], other["id"]]
    first = page["data"][0]
    assert (first["success_count"], first["failure_count"], first["deleted_at"]) == (0, 0, None)
    assert "secret" not in first and created["secret"] not in str(page)
    everything = hooked.http.get("/webhooks").json()
    assert {created["id"], other["id"]} <= {w["id"] for w in everything["data"]}
    assert hooked.http.get("/webhooks", params={"agent_id": agent}).json()["total"] == 2
    ws.WebhookOut.model_validate(hooked.webhook(created["id"]))

    gone = hooked.http.delete(f"/webhooks/{other['id']}")
    assert gone.status_code == 200 and gone.json() == {"message": "Webhook deleted successfully"}
    assert [w["id"] for w in hooked.http.get(f"/agents/{agent}/webhooks").json()["data"]] == [created["id"]]
    assert hooked.http.get(f"/webhooks/{other['id']}").status_code == 404
    assert hooked.http.delete(f"/webhooks/{other['id']}").status_code == 404
    hooked.http.delete(f"/webhooks/{created['id']}")


def test_a_delivery_is_the_execution_signed_as_standard_webhooks(hooked: Hooked, receiver: Receiver) -> None:
    agent = hooked.agent("Signed")
    hook = hooked.hook(agent, receiver.url)
    execution = hooked.run(agent)
    wait_until(lambda: len(receiver.received()) == 1, "the delivery arrives")
    got = receiver.received()[0]
    assert got.method == "POST" and got.path == "/hook" and got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"].startswith("opentess-webhooks/")
    payload = _verified(hook["secret"], got)
    assert payload == hooked.http.get(f"/agent-responses/{execution['id']}").json()
    assert payload["status"] == "succeeded" and payload["template_id"] == agent
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(got.body.replace(b"succeeded", b"failed"), got.headers)
    wait_until(lambda: hooked.deliveries(hook["id"])[0]["status"] == "succeeded", "the delivery is recorded")
    delivery = hooked.deliveries(hook["id"])[0]
    ws.Delivery.model_validate(delivery)
    assert delivery["message_id"] == got.headers["webhook-id"] and delivery["execution_id"] == execution["id"]
    assert [(a["attempt"], a["success"], a["status_code"]) for a in delivery["attempts"]] == [(1, True, 200)]
    assert delivery["attempts"][0]["duration_ms"] is not None and delivery["delivered_at"] is not None
    assert (hooked.webhook(hook["id"])["success_count"], hooked.webhook(hook["id"])["failure_count"]) == (1, 0)


def test_a_receiver_down_at_first_gets_the_delivery_later(hooked: Hooked, receiver: Receiver) -> None:
    """503 and 500 are failures; the same message (same webhook-id, signed anew) comes again
    after the backoff, and the counters say what happened."""
    agent = hooked.agent("Down at first")
    hook = hooked.hook(agent, receiver.url)
    receiver.answers = [503, 500]
    execution = hooked.run(agent)
    wait_until(lambda: hooked.deliveries(hook["id"])[0]["status"] == "succeeded", "delivered on the third attempt")
    got = receiver.received()
    assert len(got) == 3 and len({g.headers["webhook-id"] for g in got}) == 1
    assert [_verified(hook["secret"], g)["id"] for g in got] == [execution["id"]] * 3
    attempts = hooked.deliveries(hook["id"])[0]["attempts"]
    assert [(a["attempt"], a["status_code"], a["error"]) for a in attempts] == [
        (1, 503, "HTTP 503"), (2, 500, "HTTP 500"), (3, 200, None),
    ]  # fmt: skip
    assert attempts[0]["response"] == '{"ok": false}'
    counters = hooked.webhook(hook["id"])
    assert (counters["success_count"], counters["failure_count"], counters["status"]) == (1, 2, "active")


def test_a_receiver_not_listening_yet_gets_the_delivery_once_it_is(hooked: Hooked) -> None:
    late = Receiver()  # its port chosen, nothing listening on it yet
    try:
        agent = hooked.agent("Not listening")
        hook = hooked.hook(agent, late.url)
        hooked.run(agent)
        wait_until(lambda: len(hooked.deliveries(hook["id"])[0]["attempts"]) >= 1, "a first attempt fails")
        first = hooked.deliveries(hook["id"])[0]["attempts"][0]
        assert first["success"] is False and first["status_code"] is None and "Connect" in first["error"]
        late.start()
        wait_until(lambda: len(late.received()) == 1, "delivered once the receiver listens")
        _verified(hook["secret"], late.received()[0])
        wait_until(lambda: hooked.deliveries(hook["id"])[0]["status"] == "succeeded", "recorded")
    finally:
        late.close()


def test_failed_and_cancelled_ends_are_delivered(hooked: Hooked, receiver: Receiver, upstream: FakeUpstream) -> None:
    agent = hooked.agent("Every end")
    hook = hooked.hook(agent, receiver.url)
    failed = hooked.http.post(
        f"/agents/{agent}/execute?waitExecution=true", json={**CHAT, "model": "dead-upstream"}
    ).json()["responses"][0]
    assert failed["status"] == "failed"
    upstream.delay = 0.5
    started = hooked.http.post(f"/agents/{agent}/execute", json={**CHAT, "stream": False}).json()["responses"][0]
    wait_until(lambda: hooked.http.get(f"/agent-responses/{started['id']}").json()["status"] == "running", "running")
    cancel = hooked.http.post(f"/agent-responses/{started['id']}/cancel")
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    wait_until(lambda: len(receiver.received()) == 2, "both ends delivered")
    payloads = {p["id"]: p for p in (_verified(hook["secret"], g) for g in receiver.received())}
    assert payloads[failed["id"]]["status"] == "failed" and payloads[failed["id"]]["error"]
    assert payloads[started["id"]]["status"] == "cancelled"


def test_a_get_webhook_signs_its_query_string(hooked: Hooked, receiver: Receiver) -> None:
    agent = hooked.agent("GET")
    hook = hooked.hook(agent, receiver.url + "?source=opentess", method="GET")
    execution = hooked.run(agent)
    wait_until(lambda: len(receiver.received()) == 1, "delivered")
    got = receiver.received()[0]
    assert got.method == "GET" and got.body == b""
    Webhook(hook["secret"]).verify(got.query, got.headers, json_parse=False)
    fields = dict(httpx.QueryParams(got.query))
    assert fields["source"] == "opentess" and fields["id"] == str(execution["id"]) and fields["status"] == "succeeded"
    assert fields["template_id"] == str(agent)


def test_a_receiver_timeout_is_a_failure(hooked: Hooked, receiver: Receiver) -> None:
    agent = hooked.agent("Slow receiver")
    hook = hooked.hook(agent, receiver.url)
    receiver.answers = ["hang"]
    hooked.run(agent)
    wait_until(lambda: hooked.deliveries(hook["id"])[0]["status"] == "succeeded", "delivered after the timeout")
    attempts = hooked.deliveries(hook["id"])[0]["attempts"]
    assert attempts[0]["error"] == "timed out after 1 s" and attempts[0]["status_code"] is None
    assert attempts[1]["success"] is True and len(receiver.received()) == 2


def test_disabled_after_deliveries_that_failed_every_attempt(hooked: Hooked, receiver: Receiver) -> None:
    """Two deliveries in a row that exhausted their retries (``webhook_disable_after`` = 2) turn
    the webhook off with the reason on it; turning it back on delivers what ends next."""
    agent = hooked.agent("Always failing")
    hook = hooked.hook(agent, receiver.url)
    receiver.answers = [500] * 18
    hooked.run(agent)
    hooked.run(agent)
    wait_until(lambda: hooked.webhook(hook["id"])["status"] == "inactive", "the webhook is disabled")
    disabled = hooked.webhook(hook["id"])
    assert disabled["disabled_reason"].startswith("disabled after 2 deliveries in a row failed every attempt")
    assert "HTTP 500" in disabled["disabled_reason"] and disabled["disabled_at"]
    assert disabled["failure_count"] == 18 and disabled["success_count"] == 0
    deliveries = hooked.deliveries(hook["id"])
    assert [d["status"] for d in deliveries] == ["failed", "failed"]
    assert all(len(d["attempts"]) == 9 and d["error"].startswith("gave up after 9 attempts") for d in deliveries)
    hooked.run(agent)  # inactive: nothing is sent
    back = hooked.http.patch(f"/webhooks/{hook['id']}", json={"status": "active"}).json()
    assert (back["status"], back["disabled_reason"], back["disabled_at"]) == ("active", None, None)
    execution = hooked.run(agent)
    wait_until(lambda: hooked.deliveries(hook["id"])[0]["status"] == "succeeded", "delivered again")
    assert (
        len(hooked.deliveries(hook["id"])) == 3 and hooked.deliveries(hook["id"])[0]["execution_id"] == execution["id"]
    )
    assert len(receiver.received()) == 19


def test_the_sweep_delivers_ends_this_process_never_saw(hooked: Hooked, receiver: Receiver) -> None:
    """An execution ended elsewhere — another process, the reaper of a dead one — is delivered
    by the sweep; one that ended before the webhook existed is not."""
    agent = hooked.agent("Ended elsewhere")
    settings = hooked.world.settings

    async def end_one(status: str) -> int:
        store = Store(make_engine(settings))
        try:
            new_id, _ = await store.executions.create(
                workspace_id=hooked.world.workspace_id, agent_id=agent, user_id=hooked.world.user_id, token_id=None,
                root_id=None, source="execute", input="x", model=FAKE_MODEL, turns=[], messages=[], params={},
                instance_id="a-process-that-died",
            )  # fmt: skip
            await store.executions.finish(new_id, status=status, output="", error="interrupted by server restart")
            return new_id
        finally:
            await close_store(store)

    before = asyncio.run(end_one("failed"))
    hook = hooked.hook(agent, receiver.url)
    after = asyncio.run(end_one("failed"))
    wait_until(lambda: len(receiver.received()) == 1, "the sweep delivers it")
    assert _verified(hook["secret"], receiver.received()[0])["id"] == after
    wait_until(lambda: hooked.deliveries(hook["id"])[0]["status"] == "succeeded", "recorded")
    assert [d["execution_id"] for d in hooked.deliveries(hook["id"])] == [after]
    assert before < after


def test_tenancy_between_users_and_workspaces(hooked: Hooked, receiver: Receiver) -> None:
    """Another user's or workspace's webhooks are missing ones; runs of a public agent by
    another workspace are not delivered to the owner's webhook."""
    world = hooked.world
    agent = hooked.agent("Tenancy")
    hook = hooked.hook(agent, receiver.url)
    bob = hooked.bob
    assert bob.get(f"/agents/{agent}/webhooks").status_code == 404
    assert bob.post(f"/agents/{agent}/webhooks", json={"url": receiver.url}).status_code == 404
    assert bob.get(f"/webhooks/{hook['id']}").status_code == 404
    assert bob.patch(f"/webhooks/{hook['id']}", json={"status": "inactive"}).status_code == 404
    assert bob.get(f"/webhooks/{hook['id']}/deliveries").status_code == 404
    assert bob.delete(f"/webhooks/{hook['id']}").status_code == 404
    assert hook["id"] not in {w["id"] for w in bob.get("/webhooks").json()["data"]}
    second = {"x-workspace-id": str(world.second_workspace_id)}
    assert hooked.http.get(f"/webhooks/{hook['id']}", headers=second).status_code == 404
    assert hook["id"] not in {w["id"] for w in hooked.http.get("/webhooks", headers=second).json()["data"]}

    assert hooked.http.patch(f"/agents/{agent}", json={"visibility": "public"}).status_code == 200
    theirs = bob.post(f"/agents/{agent}/execute?waitExecution=true", json=CHAT)
    assert theirs.status_code == 200, theirs.text
    mine = hooked.run(agent)
    wait_until(lambda: len(receiver.received()) >= 1, "the owner's run is delivered")
    wait_until(lambda: hooked.deliveries(hook["id"])[0]["status"] == "succeeded", "recorded")
    assert [d["execution_id"] for d in hooked.deliveries(hook["id"])] == [mine["id"]]
    assert [_verified(hook["secret"], g)["id"] for g in receiver.received()] == [mine["id"]]
    assert hooked.webhook(hook["id"])["success_count"] == 1


def test_bad_input_on_every_webhook_route(hooked: Hooked, receiver: Receiver) -> None:
    agent = hooked.agent("Bad input")
    hook = hooked.hook(agent, receiver.url)
    foreign = hooked.world.other_agent_id
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", f"/agents/{foreign}/webhooks", {"url": receiver.url}, 404, ""),
        ("POST", "/agents/999999/webhooks", {"url": receiver.url}, 404, ""),
        ("POST", f"/agents/{agent}/webhooks", [receiver.url], 400, ""),
        ("POST", f"/agents/{agent}/webhooks", {}, 422, "url"),
        ("POST", f"/agents/{agent}/webhooks", {"url": 42}, 422, "url"),
        ("POST", f"/agents/{agent}/webhooks", {"url": "ftp://example.com/x"}, 422, "url"),
        ("POST", f"/agents/{agent}/webhooks", {"url": "https://user:pw@example.com/x"}, 422, "url"),
        ("POST", f"/agents/{agent}/webhooks", {"url": "https://example.com/" + "x" * 2100}, 422, "url"),
        ("POST", f"/agents/{agent}/webhooks", {"url": "https://example.com:99999/x"}, 422, "url"),
        ("POST", f"/agents/{agent}/webhooks", {"url": receiver.url, "method": "PUT"}, 422, "method"),
        ("POST", f"/agents/{agent}/webhooks", {"url": receiver.url, "method": 1}, 422, "method"),
        ("POST", f"/agents/{agent}/webhooks", {"url": receiver.url, "status": "paused"}, 422, "status"),
        ("GET", f"/agents/{foreign}/webhooks", None, 404, ""),
        ("GET", f"/agents/{agent}/webhooks?per_page=abc", None, 422, "per_page"),
        ("GET", "/webhooks?agent_id=abc", None, 422, "agent_id"),
        ("GET", "/webhooks?page=0", None, 422, "page"),
        ("GET", "/webhooks/999999", None, 404, ""),
        ("GET", "/webhooks/abc", None, 404, ""),
        ("PATCH", "/webhooks/999999", {"status": "active"}, 404, ""),
        ("PATCH", f"/webhooks/{hook['id']}", {"method": "DELETE"}, 422, "method"),
        ("PATCH", f"/webhooks/{hook['id']}", {"url": "http://example.com/x"}, 422, "url"),
        ("PATCH", f"/webhooks/{hook['id']}", "active", 400, ""),
        ("DELETE", "/webhooks/999999", None, 404, ""),
        ("GET", "/webhooks/999999/deliveries", None, 404, ""),
        ("GET", f"/webhooks/{hook['id']}/deliveries?page=x", None, 422, "page"),
    ]
    for method, path, body, status, field in cases:
        resp = hooked.http.request(method, path, json=body) if body is not None else hooked.http.request(method, path)
        assert resp.status_code == status, (method, path, body, resp.text)
        answer = resp.json()
        assert answer["message"] and answer["error"], (method, path)
        if field:
            assert field in answer["errors"], (method, path, answer)
    for n in range(9):
        hooked.hook(agent, f"{receiver.url}?n={n}")
    full = hooked.http.post(f"/agents/{agent}/webhooks", json={"url": receiver.url})
    assert full.status_code == 409 and "10 webhooks" in full.json()["message"]
    assert hooked.webhook(hook["id"])["url"] == receiver.url  # the refused changes changed nothing


def test_private_addresses_are_refused_unless_allowed(hooked: Hooked) -> None:
    """At registration: plain http, and addresses that are not public (literal, or what a name
    resolves to), are field errors; a host in OPENTESS_WEBHOOK_ALLOW_HOSTS may use both."""
    agent = hooked.agent("Addresses")
    for url in (
        "https://10.0.0.7/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://100.64.0.1/hook",
        "https://localhost/hook",  # a name that resolves to loopback
        "https://127.0.0.2/hook",  # loopback, but not the allowed host
        "http://example.com/hook",
    ):
        resp = hooked.http.post(f"/agents/{agent}/webhooks", json={"url": url})
        assert resp.status_code == 422, (url, resp.text)
        assert "url" in resp.json()["errors"], url
    allowed = hooked.http.post(f"/agents/{agent}/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert allowed.status_code == 201


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_address_rule_holds_at_delivery_time(backend: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    """The check is made when sending, on what the name resolves to then, and the connection
    goes to a checked address under the URL's own name: while ``localhost`` is allowed its
    deliveries arrive (Host: localhost); once it is not, they are refused and nothing is sent."""
    settings = {**FAST, "webhook_allow_hosts": ["localhost"]}
    with isolated_world(backend, tmp_path / "data", upstream.url, **settings) as world, Receiver().start() as receiver:
        first = LiveServer(world.settings).start()
        try:
            env = Hooked(world, first)
            agent = env.agent("Rebinding")
            plain = env.hook(agent, f"http://localhost:{receiver.port}/hook")
            secure = env.hook(agent, f"https://localhost:{receiver.port}/secure", status="inactive")
            env.run(agent)
            wait_until(lambda: len(receiver.received()) == 1, "delivered while allowed")
            assert receiver.received()[0].headers["Host"] == f"localhost:{receiver.port}"
            _verified(plain["secret"], receiver.received()[0])
            env.close()
        finally:
            first.stop()
        second = LiveServer(with_settings(world, webhook_allow_hosts=[]).settings).start()
        env = Hooked(world, second)
        try:
            assert env.http.patch(f"/webhooks/{secure['id']}", json={"status": "active"}).status_code == 200
            env.run(agent)
            wait_until(lambda: bool(env.deliveries(secure["id"])[0]["attempts"]), "an attempt is made")
            attempt = env.deliveries(secure["id"])[0]["attempts"][0]
            assert attempt["success"] is False and attempt["status_code"] is None
            assert attempt["error"].startswith("refused: localhost resolves to ")
            assert "a loopback address" in attempt["error"]
            wait_until(lambda: bool(env.deliveries(plain["id"])[0]["attempts"]), "an attempt is made")
            assert "must use https" in env.deliveries(plain["id"])[0]["attempts"][0]["error"]
            assert env.webhook(secure["id"])["failure_count"] >= 1
            assert len(receiver.received()) == 1
        finally:
            env.close()
            second.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_restart_between_attempts_loses_nothing(backend: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    """The delivery is a row before it is sent: a server stopped between two attempts leaves it
    to the next server on the database, which sends the same message."""
    settings = {**FAST, "jobs_backoff_scale": 0.001}  # retries 0.03, 0.12, 0.6, 1.8, 3.6, 10.8 s apart
    late = Receiver()
    with isolated_world(backend, tmp_path / "data", upstream.url, **settings) as world:
        first = LiveServer(world.settings).start()
        env = Hooked(world, first)
        try:
            agent = env.agent("Restart")
            hook = env.hook(agent, late.url)
            execution = env.run(agent)
            wait_until(lambda: bool(env.deliveries(hook["id"])[0]["attempts"]), "a first attempt fails")
        finally:
            env.close()
            first.stop()
        late.start()
        second = LiveServer(world.settings).start()
        env = Hooked(world, second)
        try:
            wait_until(lambda: len(late.received()) == 1, "the next server delivers it")
            assert _verified(hook["secret"], late.received()[0])["id"] == execution["id"]
            wait_until(lambda: env.deliveries(hook["id"])[0]["status"] == "succeeded", "recorded")
            delivery = env.deliveries(hook["id"])[0]
            assert delivery["message_id"] == late.received()[0].headers["webhook-id"]
            assert delivery["attempts"][0]["success"] is False and delivery["attempts"][-1]["success"] is True
            assert len(late.received()) == 1
        finally:
            env.close()
            second.stop()
            late.close()


def test_the_webhook_rule_is_netguards_with_the_webhooks_settings() -> None:
    """The address rule itself is opentess.netguard's (tested with the fetcher's); webhooks add
    https unless allowed, URLs up to 2,048 characters, and errors naming their own setting."""
    allow = ["Receiver.internal", "127.0.0.1:9000", "[::1]"]
    assert safety.parse("http://receiver.internal/x", allow).allowed
    assert safety.parse("http://127.0.0.1:9000/x", allow).allowed
    assert safety.parse("http://[::1]:8080/x", allow).allowed
    with pytest.raises(safety.Refused, match="http only for hosts in OPENTESS_WEBHOOK_ALLOW_HOSTS"):
        safety.parse("http://127.0.0.1:9001/x", allow)  # another port of an allowed host:port
    target = safety.parse("https://example.com:8443/a/b?c=d", [])
    assert (target.host_header, target.path, target.allowed) == ("example.com:8443", "/a/b?c=d", False)
    long = "https://example.com/" + "a" * (safety.MAX_URL_CHARS - len("https://example.com/"))
    assert safety.parse(long, []).path.endswith("a")
    with pytest.raises(safety.Refused, match="longer than 2048"):
        safety.parse(long + "a", [])
    for missing in (None, "", "  ", 5):
        with pytest.raises(safety.Refused, match="The url field is required"):
            safety.parse(missing, [])
    for refused in ("https://[::ffff:10.0.0.1]/hook", "https://[64:ff9b::a00:1]/hook", "https://100.64.0.1/hook"):
        with pytest.raises(safety.Refused, match=r"only public addresses .*OPENTESS_WEBHOOK_ALLOW_HOSTS"):
            asyncio.run(safety.checked_addresses(safety.parse(refused, [])))
    public = safety.parse("https://1.1.1.1/hook", [])
    assert asyncio.run(safety.checked_addresses(public)) == [ipaddress.ip_address("1.1.1.1")]


@pytest.mark.parametrize("doc", ["README.md", "docs/webhooks.md"])
def test_the_documented_receiver_verifies_deliveries(hooked: Hooked, tmp_path: Path, doc: str) -> None:
    """The receiver of the README and of docs/webhooks.md, run as written: it takes a signed
    delivery and refuses a forged one."""
    match = re.search(r"<!-- receiver -->\n```python\n(.*?)\n```", (ROOT / doc).read_text(), re.S)
    assert match is not None
    script = tmp_path / "receiver.py"
    script.write_text(match.group(1))
    port = free_port()
    agent = hooked.agent("Documented receiver")
    hook = hooked.hook(agent, f"http://127.0.0.1:{port}/opentess")
    env = {**os.environ, "WEBHOOK_SECRET": hook["secret"], "PORT": str(port)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
    try:

        def listening() -> bool:
            try:
                forged = httpx.post(
                    f"http://127.0.0.1:{port}/opentess",
                    content=b'{"id": 1, "status": "succeeded"}',
                    headers={
                        "webhook-id": "msg_x",
                        "webhook-timestamp": str(int(time.time())),
                        "webhook-signature": "v1,AAAA",
                    },
                )
            except httpx.TransportError:
                return False
            assert forged.status_code == 401
            return True

        wait_until(listening, "the receiver listens")
        execution = hooked.run(agent)
        wait_until(lambda: hooked.deliveries(hook["id"])[0]["status"] == "succeeded", "delivered")
        assert hooked.deliveries(hook["id"])[0]["attempts"][-1]["status_code"] == 204
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert out.split()[:2] == [str(execution["id"]), "succeeded"]


def test_https_goes_to_the_checked_address_under_the_urls_name(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection goes to the address the name resolved to, while TLS (SNI and the
    certificate check) and the Host header speak of the name: a certificate for ``localhost``
    is accepted for https://localhost, and refused for the same receiver called by its address."""
    import ssl

    cert, key = self_signed(tmp_path, "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the server trusts this receiver's certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    settings = {**FAST, "webhook_allow_hosts": ["localhost", "127.0.0.1"]}
    with (
        isolated_world("sqlite", tmp_path / "data", upstream.url, **settings) as world,
        Receiver(tls=tls).start() as receiver,
    ):
        server = LiveServer(world.settings).start()
        env = Hooked(world, server)
        try:
            agent = env.agent("TLS")
            by_name = env.hook(agent, f"https://localhost:{receiver.port}/hook")
            by_address = env.hook(agent, f"https://127.0.0.1:{receiver.port}/hook")
            execution = env.run(agent)
            wait_until(lambda: len(receiver.received()) == 1, "delivered over TLS")
            got = receiver.received()[0]
            assert got.headers["Host"] == f"localhost:{receiver.port}"
            assert _verified(by_name["secret"], got)["id"] == execution["id"]
            wait_until(lambda: bool(env.deliveries(by_address["id"])[0]["attempts"]), "an attempt by address")
            refused = env.deliveries(by_address["id"])[0]["attempts"][0]
            assert refused["success"] is False and "CERTIFICATE_VERIFY_FAILED" in refused["error"]
        finally:
            env.close()
            server.stop()
