"""Contract §3 details of POST /agents/{id}/openai/chat/completions, through real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.world import World, execution


def post(http: httpx.Client, agent_id: int, body: dict[str, Any], prefix: str = "") -> httpx.Response:
    return http.post(f"{prefix}/agents/{agent_id}/openai/chat/completions", json=body)


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "language": "English", **extra}


def openai_error(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


@pytest.mark.parametrize("temperature", ["1", 1, 1.0, "0.5", 0])
def test_temperature_number_or_numeric_string(
    http: httpx.Client, world: World, upstream: FakeUpstream, temperature: Any
) -> None:
    resp = post(http, world.agent_id, chat(temperature=temperature))
    assert resp.status_code == 200, resp.text
    assert upstream.last["temperature"] == float(temperature)


def test_temperature_defaults_to_the_question_default(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    assert post(http, world.agent_id, chat()).status_code == 200
    assert upstream.last["temperature"] == 0.5


@pytest.mark.parametrize("temperature", [0.7, "2", "hot", True])
def test_temperature_outside_options_is_400_naming_them(http: httpx.Client, world: World, temperature: Any) -> None:
    resp = post(http, world.agent_id, chat(temperature=temperature))
    assert resp.status_code == 400
    err = openai_error(resp)
    assert err["param"] == "temperature"
    assert err["type"] == "invalid_request_error"
    if temperature is not True:
        assert "0, 0.5, 1" in err["message"]


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_both_path_prefixes(http: httpx.Client, world: World, prefix: str) -> None:
    resp = post(http, world.agent_id, chat(), prefix)
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "Hello from the upstream."


def test_roles_and_content_parts(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    """system, developer (sent as system), user, assistant; text parts joined."""
    body = chat(
        messages=[
            {"role": "developer", "content": "Rule one."},
            {"role": "system", "content": [{"type": "text", "text": "Rule two."}]},
            {"role": "user", "content": [{"type": "text", "text": "part a"}, {"type": "text", "text": "part b"}]},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": "last", "name": "alice"},
        ]
    )
    resp = post(http, world.agent_id, body)
    assert resp.status_code == 200, resp.text
    assert upstream.last["messages"][1:] == [
        {"role": "system", "content": "Rule one."},
        {"role": "system", "content": "Rule two."},
        {"role": "user", "content": "part a\npart b"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "last"},
    ]
    stored = execution(world.settings, resp.json()["agent_response"]["id"])
    assert stored["input"] == "last"


def test_image_content_part_is_400(http: httpx.Client, world: World) -> None:
    body = chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    resp = post(http, world.agent_id, body)
    assert resp.status_code == 400
    err = openai_error(resp)
    assert "image_url" in err["message"] and err["param"] == "messages[0].content[0]"


@pytest.mark.parametrize("role", ["assistant", "system"])
def test_last_message_must_be_user(http: httpx.Client, world: World, role: str) -> None:
    body = chat(messages=[{"role": "user", "content": "a"}, {"role": role, "content": "b"}])
    resp = post(http, world.agent_id, body)
    assert resp.status_code == 400
    assert openai_error(resp)["param"] == "messages"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (None, "messages"),
        ([], "messages"),
        ("hello", "messages"),
        ([{"role": "tool", "content": "x"}], "messages[0].role"),
        (["hi"], "messages[0]"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
    ],
)
def test_malformed_messages(http: httpx.Client, world: World, messages: Any, param: str) -> None:
    resp = post(http, world.agent_id, chat(messages=messages))
    assert resp.status_code == 400
    assert openai_error(resp)["param"] == param


def test_model_option_is_used(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    resp = post(http, world.agent_id, chat(model="fake-gpt"))
    assert resp.json()["model"] == "fake-gpt"


def test_unknown_model_falls_back_to_the_agent_default(http: httpx.Client, world: World) -> None:
    """OpenAI SDKs always send a model; one that is not an option means 'the agent's model'."""
    for model in ("gpt-4o", "no-such-model", None):
        body = chat(model=model)
        resp = post(http, world.agent_id, body)
        assert resp.status_code == 200
        assert resp.json()["model"] == "fake-gpt"


def test_tools_string_vs_array(http: httpx.Client, world: World) -> None:
    assert post(http, world.agent_id, chat(tools="no-tools")).status_code == 200
    resp = post(http, world.agent_id, chat(tools=[{"type": "function", "function": {"name": "f"}}]))
    assert resp.status_code == 400
    err = openai_error(resp)
    assert err["param"] == "tools" and "string" in err["message"]
    resp = post(http, world.agent_id, chat(tools="unknown-toolset"))
    assert resp.status_code == 400 and "no-tools" in openai_error(resp)["message"]


def test_required_custom_field_missing_is_400_naming_it(http: httpx.Client, world: World) -> None:
    body = chat()
    del body["language"]
    resp = post(http, world.agent_id, body)
    assert resp.status_code == 400
    err = openai_error(resp)
    assert err["param"] == "language"
    assert "The language field is required." in err["message"]


def test_custom_field_from_legacy_answers_object(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    body = chat(answers={"language": "Italian"})
    del body["language"]
    assert post(http, world.agent_id, body).status_code == 200
    assert "Italian" in upstream.last["messages"][0]["content"]


def test_invalid_select_custom_field(http: httpx.Client, world: World) -> None:
    resp = post(http, world.agent_id, chat(tone="angry"))
    assert resp.status_code == 400
    err = openai_error(resp)
    assert err["param"] == "tone" and "formal, casual" in err["message"]


def test_sampling_parameters_reach_the_upstream(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    body = chat(max_completion_tokens=9, top_p=0.9, stop="END", seed=3, presence_penalty=0.5, user="u-1")
    assert post(http, world.agent_id, body).status_code == 200
    sent = upstream.last
    assert (sent["max_tokens"], sent["top_p"], sent["stop"], sent["seed"]) == (9, 0.9, ["END"], 3)
    assert sent["presence_penalty"] == 0.5
    assert "user" not in sent


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"top_p": 3}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream": "yes"}, "stream"),
        ({"seed": 1.5}, "seed"),
        ({"root_id": "abc"}, "root_id"),
    ],
)
def test_unsupported_or_invalid_parameters_are_400(
    http: httpx.Client, world: World, extra: dict[str, Any], param: str
) -> None:
    resp = post(http, world.agent_id, chat(**extra))
    assert resp.status_code == 400
    assert openai_error(resp)["param"] == param


def test_harmless_parameters_are_ignored(http: httpx.Client, world: World) -> None:
    body = chat(n=1, user="x", metadata={"a": "b"}, store=False, logprobs=False, response_format={"type": "text"})
    assert post(http, world.agent_id, body).status_code == 200


def test_text_agent_is_rejected(http: httpx.Client, world: World) -> None:
    resp = post(http, world.text_agent_id, chat(topic="sea"))
    assert resp.status_code == 400
    assert "text agent" in openai_error(resp)["message"]


def test_root_id_continues_the_conversation(http: httpx.Client, world: World, upstream: FakeUpstream) -> None:
    first = post(http, world.agent_id, chat(messages=[{"role": "user", "content": "turn one"}])).json()
    root = first["agent_response"]["id"]
    assert first["agent_response"]["root_id"] == root
    second = post(http, world.agent_id, chat(root_id=root, messages=[{"role": "user", "content": "turn two"}])).json()
    assert second["agent_response"]["root_id"] == root
    assert upstream.last["messages"][1:] == [
        {"role": "user", "content": "turn one"},
        {"role": "assistant", "content": "Hello from the upstream."},
        {"role": "user", "content": "turn two"},
    ]
    third = post(http, world.agent_id, chat(root_id=str(root), messages=[{"role": "user", "content": "three"}])).json()
    assert third["agent_response"]["root_id"] == root
    assert [m["content"] for m in upstream.last["messages"][1:]][::2] == ["turn one", "turn two", "three"]


def test_root_id_of_another_agent_is_404(http: httpx.Client, world: World) -> None:
    first = post(http, world.agent_id, chat()).json()
    resp = post(http, world.local_agent_id, chat(root_id=first["agent_response"]["id"]))
    assert resp.status_code == 404
    assert openai_error(resp)["type"] == "not_found_error"
    resp = post(http, world.agent_id, chat(root_id=10**9))
    assert resp.status_code == 404


def test_streaming_headers(http: httpx.Client, world: World) -> None:
    with http.stream("POST", f"/agents/{world.agent_id}/openai/chat/completions", json=chat(stream=True)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        assert resp.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in resp.headers
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
