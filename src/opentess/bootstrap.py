"""First start: on an empty database, create a default user, workspace, demo agent and API token."""

from __future__ import annotations

from dataclasses import dataclass

from opentess.agents import AgentSpec, validate_spec
from opentess.errors import Conflict
from opentess.questions import Question
from opentess.sandbox import TemplateSandbox
from opentess.settings import BUILTIN_MODEL, Settings
from opentess.store import Store

DEFAULT_EMAIL = "admin@localhost"


@dataclass(frozen=True, slots=True)
class FirstStart:
    email: str
    workspace_id: int
    agent_id: int
    token: str


def demo_agent_spec() -> AgentSpec:
    return AgentSpec(
        title="Demo chat",
        type="chat",
        description="A small chat agent on the embedded SmolLM2 model.",
        visibility="workspace",
        instructions="You are a helpful, concise assistant. Answer in {{ language }}.",
        questions=[
            Question(type="select", name="temperature", options=["0", "0.25", "0.5", "0.75", "1"], default="0.5",
                     description="Sampling temperature"),
            Question(type="select", name="model", options=[BUILTIN_MODEL], default=BUILTIN_MODEL,
                     description="Model"),
            Question(type="select", name="tools", options=["no-tools"], default="no-tools", description="Toolset"),
            Question(type="text", name="language", default="English", description="Language of the answers"),
        ],
    )  # fmt: skip


async def first_start(store: Store, settings: Settings) -> FirstStart | None:
    """Seed an empty database; returns None (and creates nothing) when any user exists."""
    if await store.users.count() > 0:
        return None
    try:
        user, workspace = await store.users.create(DEFAULT_EMAIL, "Admin")
    except Conflict:  # another process starting at the same moment seeded it
        return None
    spec = demo_agent_spec()
    async with TemplateSandbox(settings.sandbox_limits()) as sandbox:
        await validate_spec(spec, settings, sandbox)
    agent = await store.agents.create(spec, workspace.id)
    _, secret = await store.tokens.create(user.id, name="first-start")
    return FirstStart(user.email, workspace.id, agent.id, secret)


def banner(seed: FirstStart, base_url: str) -> str:
    agent_url = f"{base_url}/agents/{seed.agent_id}/openai"
    return f"""
opentess: first start — created user {seed.email}, workspace {seed.workspace_id}, demo agent {seed.agent_id}.

  API token (shown once, keep it): {seed.token}

  The README's examples read these; paste this line into your shell:
    export OPENTESS_URL={base_url} OPENTESS_TOKEN={seed.token} OPENTESS_AGENT={seed.agent_id}

  curl {agent_url}/chat/completions \\
    -H "Authorization: Bearer {seed.token}" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  from openai import OpenAI
  client = OpenAI(base_url="{agent_url}", api_key="{seed.token}")
  reply = client.chat.completions.create(model="gpt-4o", messages=[{{"role": "user", "content": "Hello!"}}])
  print(reply.choices[0].message.content)
"""
