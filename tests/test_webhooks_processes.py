"""Two real `opentess serve` processes on one database deliver each webhook message once:
every request the receiver gets is one recorded attempt, and every delivery succeeds exactly
once, whichever process ran the execution and whichever took each retry."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.support.backends import postgres_database_or_skip
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import free_port, serve, write_config
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until
from tests.support.world import FAKE_MODEL, make_settings, seed

RUNS = 10
ENV = {
    "OPENTESS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "OPENTESS_JOBS_BACKOFF_SCALE": "0.0001",
    "OPENTESS_JOBS_POLL_S": "0.05",
    "OPENTESS_WEBHOOK_SWEEP_S": "0.2",
}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_processes_deliver_each_message_once(backend: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    if backend == "postgres":
        with postgres_database_or_skip() as url:
            _scenario(url, tmp_path, upstream)
    else:
        _scenario(f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}", tmp_path, upstream)


def _scenario(database_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    world = seed(make_settings(tmp_path / "seed", upstream.url, database_url=database_url))
    config = write_config(tmp_path / "c.toml", upstream.url)
    env = {**ENV, "OPENTESS_DATABASE_URL": database_url}
    ports = [free_port(), free_port()]
    procs = [serve(config, tmp_path / f"data{i}", port, env=env) for i, port in enumerate(ports)]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    auth = {"Authorization": f"Bearer {world.token}"}
    try:
        with Receiver().start() as receiver, httpx.Client(headers=auth, timeout=60) as http:
            receiver.answers = [503] * 6  # retries too, spread over both processes
            spec = {
                "title": "Two processes",
                "instructions": "Be brief.",
                "questions": [{"type": "select", "name": "model", "options": [FAKE_MODEL]}],
            }
            agent = http.post(f"{bases[0]}/agents", json=spec).json()["id"]
            hook = http.post(f"{bases[0]}/agents/{agent}/webhooks", json={"url": receiver.url}).json()
            executions = set()
            for n in range(RUNS):
                resp = http.post(
                    f"{bases[n % 2]}/agents/{agent}/execute?waitExecution=true",
                    json={"messages": [{"role": "user", "content": f"run {n}"}]},
                )
                assert resp.status_code == 200, resp.text
                executions.add(resp.json()["responses"][0]["id"])

            def deliveries() -> list[dict[str, Any]]:
                page = http.get(f"{bases[1]}/webhooks/{hook['id']}/deliveries", params={"per_page": 100})
                return list(page.json()["data"])

            wait_until(
                lambda: len(deliveries()) == RUNS and all(d["status"] == "succeeded" for d in deliveries()),
                "every execution delivered",
            )
            got = receiver.received()
            recorded = deliveries()
            attempts = [a for d in recorded for a in d["attempts"]]
            assert len(got) == len(attempts) == RUNS + 6  # no request the attempts do not account for
            assert {d["execution_id"] for d in recorded} == executions
            per_message = Counter(g.headers["webhook-id"] for g in got)
            assert set(per_message) == {d["message_id"] for d in recorded}
            successes = Counter(d["message_id"] for d in recorded for a in d["attempts"] if a["success"])
            assert set(successes.values()) == {1}
            signer = Webhook(hook["secret"])
            assert {signer.verify(g.body, g.headers)["id"] for g in got} == executions
            counters = http.get(f"{bases[1]}/webhooks/{hook['id']}").json()
            assert (counters["success_count"], counters["failure_count"]) == (RUNS, 6)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.communicate(timeout=30)
