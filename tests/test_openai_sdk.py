"""The official OpenAI Python SDK against a live server: the way users call opentess."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.live import LiveServer
from tests.support.world import World, execution


def client(live: LiveServer, agent_id: int, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/agents/{agent_id}/openai", api_key=token, max_retries=0)


def test_sdk_non_stream_on_fake_upstream(live: LiveServer, world: World, upstream: FakeUpstream) -> None:
    """A plain create() returns the upstream's answer, and the upstream got the rendered prompt,
    the caller's messages, a numeric temperature and max_tokens."""
    reply = client(live, world.agent_id, world.token).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Translate: good morning"}],
        temperature="1",  # type: ignore[arg-type]  # Tess clients send numeric strings
        max_tokens=42,
        extra_body={"language": "French", "tone": "formal"},
    )
    assert reply.choices[0].message.content == "Hello from the upstream."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "fake-gpt"
    assert reply.usage is not None and reply.usage.prompt_tokens == 11 and reply.usage.completion_tokens == 7
    sent = upstream.last
    assert sent["model"] == "gpt-upstream"
    assert sent["messages"] == [
        {"role": "system", "content": "You are a translator. Always answer in French. Tone: formal."},
        {"role": "user", "content": "Translate: good morning"},
    ]
    assert sent["temperature"] == 1.0 and isinstance(sent["temperature"], float)
    assert sent["max_tokens"] == 42
    assert upstream.requests[-1]["headers"]["Authorization"] == "Bearer sk-upstream-secret"
    extra = reply.model_extra or {}
    agent_response = extra["agent_response"]
    assert agent_response["status"] == "succeeded"
    assert agent_response["credits"] == pytest.approx((11 * 1.5 + 7 * 4.0) / 1e6)
    stored = execution(world.settings, agent_response["id"])
    assert stored["status"] == "succeeded"
    assert stored["output"] == "Hello from the upstream."
    assert stored["input"] == "Translate: good morning"
    assert stored["model"] == "fake-gpt"
    assert stored["prompt_tokens"] == 11 and stored["completion_tokens"] == 7
    assert stored["credits"] == pytest.approx(agent_response["credits"])
    assert stored["source"] == "openai"
    assert stored["messages"] == sent["messages"]


def test_sdk_stream_on_fake_upstream(live: LiveServer, world: World, upstream: FakeUpstream) -> None:
    """Streaming yields the upstream's chunks in order, a finish reason, and the usage chunk."""
    stream = client(live, world.agent_id, world.token).chat.completions.create(
        model="fake-gpt",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"},
        ],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"language": "German"},
    )
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == upstream.chunks
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 18
    assert upstream.last["stream"] is True
    assert upstream.last["messages"][0]["content"] == "You are a translator. Always answer in German."
    assert [m["role"] for m in upstream.last["messages"]] == ["system", "system", "user", "assistant", "user"]
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    agent_response = (final.model_extra or {})["agent_response"]
    stored = execution(world.settings, agent_response["id"])
    assert stored["status"] == "succeeded" and stored["output"] == "Hello from the upstream."
    assert stored["credits"] == pytest.approx((11 * 1.5 + 7 * 4.0) / 1e6)


@pytest.mark.model
def test_sdk_on_embedded_smollm2(live: LiveServer, world: World) -> None:
    """The demo agent on the embedded SmolLM2 produces real text, streamed and not, and is stored."""
    sdk = client(live, world.local_agent_id, world.token)
    reply = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say hello."}], max_tokens=12, seed=7
    )
    text = reply.choices[0].message.content
    assert text and text.strip()
    assert reply.model == "smollm2-135m"
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 12
    assert reply.usage.prompt_tokens > 5
    stored = execution(world.settings, (reply.model_extra or {})["agent_response"]["id"])
    assert stored["status"] == "succeeded" and stored["output"] == text
    assert stored["completion_tokens"] == reply.usage.completion_tokens
    assert stored["credits"] == 0.0  # the built-in model is free unless priced in the config

    chunks = list(
        sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Count to five."}], max_tokens=16, stream=True
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.strip()
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["stop"], ["length"])
    stored = execution(world.settings, (chunks[-1].model_extra or {})["agent_response"]["id"])
    assert stored["output"] == streamed


@pytest.mark.model
def test_sdk_same_seed_same_answer(live: LiveServer, world: World) -> None:
    """seed and temperature reach llama.cpp: the same seed gives the same text."""
    sdk = client(live, world.local_agent_id, world.token)

    def ask() -> str | None:
        return (
            sdk.chat.completions.create(
                model="smollm2-135m",
                messages=[{"role": "user", "content": "Name a fruit."}],
                max_tokens=10,
                seed=123,
                temperature=1,
            )
            .choices[0]
            .message.content
        )

    assert ask() == ask()


@pytest.mark.model
def test_max_tokens_and_stop_on_embedded_model(live: LiveServer, world: World) -> None:
    sdk = client(live, world.local_agent_id, world.token)
    reply = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Write a long story about a cat."}], max_tokens=3
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens <= 3


@pytest.mark.model
def test_stop_sequence_cuts_the_embedded_models_answer(live: LiveServer, world: World) -> None:
    """A stop string taken from the middle of a greedy answer ends the same answer just before
    it, streamed or not; without a stop nothing held back for one is lost."""
    sdk = client(live, world.local_agent_id, world.token)
    ask: dict[str, Any] = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "Write a short story about a cat."}],
        "max_tokens": 40,
        "temperature": 0,
    }
    full = sdk.chat.completions.create(**ask).choices[0].message.content or ""
    words = full.split()
    assert len(words) > 8, full
    stop = " " + words[len(words) // 2]
    expected = full[: full.index(stop)]
    cut = sdk.chat.completions.create(**ask, stop=[stop, "never appears"])
    assert cut.choices[0].message.content == expected
    assert cut.choices[0].finish_reason == "stop"
    streamed = sdk.chat.completions.create(**ask, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected
    # a stop that only ever begins to appear holds text back, then releases it at the end
    partial = sdk.chat.completions.create(**ask, stop=[full[-3:] + "\u2603"])
    assert partial.choices[0].message.content == full
