"""Seeded test data: two users, their workspaces, agents of every kind, tokens in every state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from opentess.agents import AgentSpec, validate_spec
from opentess.bootstrap import demo_agent_spec
from opentess.db.engine import make_engine, migrate
from opentess.questions import Question
from opentess.sandbox import TemplateSandbox
from opentess.settings import BUILTIN_MODEL, ModelConfig, Settings
from opentess.store import Store, close_store

FAKE_MODEL = "fake-gpt"
TEMPERATURES = ["0", "0.5", "1"]


def make_settings(data_dir: Path, upstream_url: str, **overrides: object) -> Settings:
    models = {
        FAKE_MODEL: ModelConfig(
            provider="openai",
            base_url=f"{upstream_url}/v1",
            api_key="sk-upstream-secret",
            upstream_model="gpt-upstream",
            input_price=1.5,
            output_price=4.0,
        ),
        "dead-upstream": ModelConfig(provider="openai", base_url="http://127.0.0.1:9/v1"),
    }
    values: dict[str, object] = {
        "data_dir": data_dir,
        "models": models,
        "upstream_read_timeout_s": 1.5,
        "upstream_connect_timeout_s": 2.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def fake_agent_spec(title: str = "Translator") -> AgentSpec:
    return AgentSpec(
        title=title,
        type="chat",
        description="Answers in a chosen language",
        instructions="You are a translator. Always answer in {{ language }}.{% if tone %} Tone: {{ tone }}.{% endif %}",
        questions=[
            Question(type="select", name="temperature", options=TEMPERATURES, default="0.5"),
            Question(type="select", name="model", options=[FAKE_MODEL, BUILTIN_MODEL, "dead-upstream"]),
            Question(type="select", name="tools", options=["no-tools", "wikipedia"], default="no-tools"),
            Question(type="text", name="language", required=True, description="Answer language"),
            Question(type="select", name="tone", options=["formal", "casual"], required=False),
        ],
    )


@dataclass
class World:
    settings: Settings
    token: str
    other_token: str
    revoked_token: str
    expired_token: str
    user_id: int
    workspace_id: int
    second_workspace_id: int
    other_workspace_id: int
    agent_id: int  # fake upstream, workspace A
    local_agent_id: int  # SmolLM2 demo agent, workspace A
    text_agent_id: int
    second_ws_agent_id: int  # in A's second workspace
    other_agent_id: int  # workspace B


async def _seed(settings: Settings) -> World:
    engine = make_engine(settings)
    await migrate(engine)
    store = Store(engine)
    try:
        user, ws = await store.users.create("alice@example.com", "Alice")
        other, other_ws = await store.users.create("bob@example.com", "Bob")
        second_ws = await store.users.create_workspace("Alice's team", user.id)
        spec = fake_agent_spec()
        async with TemplateSandbox(settings.sandbox_limits()) as sandbox:
            await validate_spec(spec, settings, sandbox)
        agent = await store.agents.create(spec, ws.id)
        local = await store.agents.create(demo_agent_spec(), ws.id)
        text_spec = AgentSpec(
            title="Haiku",
            type="text",
            instructions="Write a haiku about {{ topic }}.",
            questions=[
                Question(type="select", name="model", options=[FAKE_MODEL]),
                Question(type="text", name="topic", required=True),
            ],
        )
        text = await store.agents.create(text_spec, ws.id)
        second = await store.agents.create(fake_agent_spec("Second"), second_ws.id)
        foreign = await store.agents.create(fake_agent_spec("Foreign"), other_ws.id)
        _, token = await store.tokens.create(user.id, "tests")
        _, other_token = await store.tokens.create(other.id, "bob")
        revoked, revoked_token = await store.tokens.create(user.id, "revoked")
        await store.tokens.revoke(revoked.id)
        _, expired_token = await store.tokens.create(user.id, "expired", expires_in_days=1e-9)
    finally:
        await engine.dispose()
    return World(
        settings, token, other_token, revoked_token, expired_token, user.id, ws.id, second_ws.id, other_ws.id,
        agent.id, local.id, text.id, second.id, foreign.id,
    )  # fmt: skip


def seed(settings: Settings) -> World:
    return asyncio.run(_seed(settings))


def execution(settings: Settings, execution_id: int) -> dict[str, object]:
    """Every stored column of one execution, read straight from the database."""

    async def go() -> dict[str, object]:
        engine = make_engine(settings)
        store = Store(engine)
        try:
            return await store.executions.get_full(execution_id)
        finally:
            await close_store(store)

    return asyncio.run(go())


def latest_execution(settings: Settings) -> dict[str, object]:
    """The newest execution, for calls whose error response carries no execution id."""

    async def go() -> int:
        from sqlalchemy import func, select

        from opentess.db.models import Execution

        engine = make_engine(settings)
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(select(func.max(Execution.id)))).scalar_one())
        finally:
            await engine.dispose()

    return execution(settings, asyncio.run(go()))


def unlimited_token(world: World) -> str:
    """A token of the world's first user exempt from server-wide rate limits (tests' admin)."""

    async def go() -> str:
        store = Store(make_engine(world.settings))
        try:
            _, secret = await store.tokens.create(world.user_id, "admin", rpm_limit=1_000_000, concurrency_limit=1000)
            return secret
        finally:
            await close_store(store)

    return asyncio.run(go())
