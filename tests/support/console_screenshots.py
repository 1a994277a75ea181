"""Screenshots of every console page for docs/console.md, taken in Debian's chromium against a
live server, the fake upstream and a few weeks of made-up history.

    .venv/bin/python -m tests.support.console_screenshots [OUT_DIR]   # default: docs/console
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from opentess.agents import AgentSpec, validate_spec
from opentess.clock import utcnow
from opentess.db.engine import make_engine, migrate
from opentess.db.models import Execution
from opentess.memories.store import MemoryStore
from opentess.questions import Question
from opentess.sandbox import TemplateSandbox
from opentess.settings import ModelConfig, Settings
from opentess.store import Store, close_store
from opentess.web.accounts import Accounts
from opentess.web.passwords import hash_password
from tests.support import files_docs
from tests.support.console import PASSWORD, ROOT, browser_or_skip, browser_sign_in
from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer

EMAIL = "ada@example.com"
MODEL = "gpt-4o-mini"


class _Site:
    def __init__(self, url: str) -> None:
        self.url = url


def _settings(data_dir: Path, upstream: str) -> Settings:
    models = {
        MODEL: ModelConfig(
            provider="openai",
            base_url=f"{upstream}/v1",
            api_key="sk-demo",
            input_price=0.15,
            output_price=0.6,
        )
    }
    return Settings(data_dir=data_dir, models=models, default_model=MODEL)


def _agents() -> list[AgentSpec]:
    steering = [
        Question(type="select", name="model", options=[MODEL, "smollm2-135m"], default=MODEL, description="Model"),
        Question(
            type="select", name="temperature", options=["0", "0.5", "1"], default="0.5", description="Temperature"
        ),
    ]
    return [
        AgentSpec(
            title="Translator",
            description="Translates anything into the language you pick",
            visibility="workspace",
            instructions="You are a translator. Answer in {{ language }}."
                         "{% if tone %} Keep a {{ tone }} tone.{% endif %}",
            questions=[
                *steering,
                Question(type="select", name="language", options=["French", "German", "Portuguese"], default="French",
                         required=True, description="Language"),
                Question(type="select", name="tone", options=["formal", "casual"], description="Tone"),
            ],
        ),
        AgentSpec(
            title="Support bot",
            description="Answers questions about our product",
            visibility="workspace",
            instructions="You are the support assistant of {{ product }}. Be brief.",
            questions=[*steering, Question(type="text", name="product", required=True, description="Product name")],
        ),
        AgentSpec(
            title="Haiku",
            type="text",
            description="A haiku about any topic",
            instructions="Write a haiku about {{ topic }}.",
            questions=[Question(type="text", name="topic", required=True, description="Topic")],
        ),
    ]  # fmt: skip


async def _seed(settings: Settings) -> tuple[dict[str, int], str]:
    engine = make_engine(settings)
    await migrate(engine)
    store = Store(engine)
    try:
        user, ws = await store.users.create(EMAIL, "Ada")
        await store.users.create_workspace("Research team", user.id)
        await Accounts(engine).set_password(user.id, hash_password(PASSWORD))
        ids = {}
        async with TemplateSandbox(settings.sandbox_limits()) as sandbox:
            for spec in _agents():
                await validate_spec(spec, settings, sandbox)
                ids[spec.title] = (await store.agents.create(spec, ws.id)).id
        _, secret = await store.tokens.create(user.id, "backend", rpm_limit=600)
        await store.tokens.create(user.id, "old laptop")
        # four weeks of made-up history for the usage charts
        rng = random.Random(7)
        now = utcnow()
        rows = []
        for day in range(28, 0, -1):
            for _ in range(rng.randint(3, 14)):
                agent = rng.choice(list(ids.values()))
                prompt, completion = rng.randint(40, 900), rng.randint(20, 600)
                failed = rng.random() < 0.06
                when = now - timedelta(days=day, minutes=rng.randint(0, 600))
                rows.append(
                    {
                        "workspace_id": ws.id, "agent_id": agent, "user_id": user.id, "source": "openai",
                        "status": "failed" if failed else "succeeded", "input": "…", "model": MODEL,
                        "output": None if failed else "…", "error": "upstream answered 500" if failed else None,
                        "prompt_tokens": None if failed else prompt,
                        "completion_tokens": None if failed else completion,
                        "credits": None if failed else (prompt * 0.15 + completion * 0.6) / 1e6,
                        "turns": [], "messages": [], "params": {}, "context": {},
                        "created_at": when, "updated_at": when,
                    }
                )  # fmt: skip
        async with engine.begin() as conn:
            await conn.execute(insert(Execution), rows)
        ids["workspace"] = ws.id
        # memories: the default collection and two of Ada's own
        memories = MemoryStore(engine)
        await memories.add(user.id, "I write for a Brazilian audience.")
        await memories.add(user.id, "Dates as 31/12/2025, never 12/31/2025.")
        style = await memories.create_collection(user.id, "Translation style")
        for text in ("Use “você”, never “tu”.", "Keep product names in English.", "Prefer short sentences."):
            await memories.add(user.id, text, style.id)
        await memories.create_collection(user.id, "Travel")
        ids["style"] = style.id
        return ids, secret
    finally:
        await close_store(store)


def _files(url: str, token: str, ids: dict[str, int]) -> None:
    """A few files of every outcome, through the API: processed, stored, failed; two linked to
    the support bot."""
    api = {"Authorization": f"Bearer {token}"}
    files = {
        "handbook.pdf": (
            files_docs.pdf(["Welcome to Acme.", "Holidays: 25 days a year.", "Expenses: keep receipts."]),
            "true",
        ),
        "prices.xlsx": (files_docs.xlsx({"Prices": [["Plan", "Per month"], ["Basic", 9], ["Pro", 29]]}), "true"),
        "glossary.txt": (b"Dashboard: painel\nSettings: configuracoes\nWorkspace: espaco de trabalho\n", "true"),
        "old-contract.doc": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "true"),
        "notes.md": (b"# Notes\n\nTo read later.\n", "false"),
    }
    made = {}
    for name, (data, process) in files.items():
        answer = httpx.post(f"{url}/files", headers=api, files={"file": (name, data)}, data={"process": process})
        made[name] = int(answer.json()["id"])
    for file_id in made.values():
        while httpx.get(f"{url}/files/{file_id}", headers=api).json()["status"] == "waiting":
            time.sleep(0.05)
    link = [made["handbook.pdf"], made["prices.xlsx"]]
    httpx.post(f"{url}/agents/{ids['Support bot']}/files", headers=api, json={"file_ids": link})


def take(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    upstream = FakeUpstream().start()
    data_dir = Path(tempfile.mkdtemp(prefix="opentess-shots-"))
    settings = _settings(data_dir, upstream.url)
    ids, token = asyncio.run(_seed(settings))
    server = LiveServer(settings).start()
    site: Any = _Site(server.url)
    _files(server.url, token, ids)
    shots: list[Path] = []

    def shot(page: Any, name: str, full: bool = False) -> None:
        path = out / f"{name}.png"
        page.screenshot(path=str(path), full_page=full)
        shots.append(path)

    try:
        with browser_or_skip() as browser:
            context = browser.new_context(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
            page = context.new_page()
            page.goto(f"{server.url}/ui/signin")
            page.get_by_label("Email").fill(EMAIL)
            shot(page, "signin")
            browser_sign_in(page, site, EMAIL)
            shot(page, "agents")

            page.goto(f"{server.url}/ui/agents/{ids['Translator']}")
            page.get_by_label("language").fill("Portuguese")
            page.get_by_label("tone").fill("casual")
            page.get_by_role("button", name="Render the instructions").click()
            page.locator("#preview-output", has_text="Portuguese").wait_for()
            shot(page, "agent-editor", full=True)

            page.get_by_label("Template").fill("You are a translator. Answer in {{ language }} for {{ reader }}.")
            page.get_by_role("button", name="Save").click()
            page.locator("#form-errors").wait_for()
            errors = out / "agent-errors.png"
            page.locator("fieldset", has=page.locator("#instructions")).screenshot(path=str(errors))
            shots.append(errors)

            upstream.chunks = ["Olá", "! Como", " posso", " ajudar", " hoje", "?"]
            upstream.delay = 0.05
            page.goto(f"{server.url}/ui/playground/{ids['Translator']}")
            page.locator("#field-language").select_option("Portuguese")
            page.get_by_role("checkbox", name=re.compile(r"^glossary\.txt")).check()
            page.get_by_role("checkbox", name="Translation style").check()
            page.get_by_label("Message").fill("Hello! How can I help you today?")
            page.get_by_label("Message").press("Enter")
            page.locator(".bubble.assistant .meta").first.wait_for()
            upstream.chunks = ["Obrigado", " pela", " sua", " paciência", "."]
            page.get_by_label("Message").fill("Thank you for your patience.")
            page.get_by_label("Message").press("Enter")
            page.locator(".bubble.assistant .meta").nth(1).wait_for()
            page.get_by_role("button", name="Python").click()
            shot(page, "playground", full=True)

            page.goto(f"{server.url}/ui/executions")
            shot(page, "executions")
            link = page.locator("tbody tr").first.get_by_role("link").first
            link.click()
            page.wait_for_url(re.compile(r".*/ui/executions/\d+$"))
            shot(page, "execution", full=True)

            page.goto(f"{server.url}/ui/usage")
            shot(page, "usage", full=True)

            # files: an upload (throttled, so that the bar is caught moving), then the list
            page.goto(f"{server.url}/ui/files")
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            throttled = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 150_000}
            cdp.send("Network.emulateNetworkConditions", throttled)
            manual = "\n\n".join(["# Plant manual", *files_docs.filler(1000)]).encode()  # ~570 kB
            page.get_by_label("File", exact=True).set_input_files(
                files=[{"name": "plant-manual.md", "mimeType": "text/markdown", "buffer": manual}]
            )
            page.get_by_role("button", name="Upload", exact=True).click()
            page.locator("#upload-percent", has_text=re.compile(r"^[4-6]\d%$")).wait_for()
            shot(page, "files-upload")
            cdp.send("Network.emulateNetworkConditions", {**throttled, "uploadThroughput": -1})
            page.locator('tr[data-name="plant-manual.md"] [data-status]', has_text="completed").wait_for()
            shot(page, "files", full=True)

            page.goto(f"{server.url}/ui/agents/{ids['Support bot']}#files")
            page.locator("#files").screenshot(path=str(out / "agent-files.png"))
            shots.append(out / "agent-files.png")

            page.goto(f"{server.url}/ui/memories?collection={ids['style']}")
            page.get_by_label("New memory").fill("Translate “sign in” as “entrar”.")
            page.get_by_role("button", name="Add the memory").click()
            page.get_by_role("status").wait_for()
            shot(page, "memories", full=True)

            page.goto(f"{server.url}/ui/tokens")
            page.get_by_label("Name").fill("ci")
            page.get_by_role("button", name="Create the token").click()
            page.locator("#new-secret").wait_for()
            shot(page, "tokens")
            context.close()

            phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
            page = phone.new_page()
            browser_sign_in(page, site, EMAIL)
            page.goto(f"{server.url}/ui/playground/{ids['Translator']}")
            shot(page, "phone-playground")
            phone.close()
    finally:
        server.stop()
        upstream.stop()
    return shots


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "console"
    for taken in take(target):
        print(taken)
