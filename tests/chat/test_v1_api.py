"""The official `openai` SDK, sync and async, as the client of a real `chatlens serve`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers import Server
from tests.upstream import WORDS, FakeUpstream

KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")
QUESTION = [{"role": "user", "content": "where is my order?"}]


class Running:
    def __init__(self, server: Server) -> None:
        self.server = server
        keys = KEY.findall(server.output)
        assert keys, server.output
        self.key = keys[0]

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.server.url}/v1", api_key=self.key, max_retries=0)

    def async_sdk(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.server.url}/v1", api_key=self.key, max_retries=0)

    def api(self, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.get(f"{self.server.url}{path}", headers=headers, timeout=10)


def _serve(tmp: Path, env: dict[str, str]) -> Iterator[Running]:
    server = Server(tmp, env)
    try:
        yield Running(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def builtin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    env = _clean_env()
    yield from _serve(tmp_path_factory.mktemp("sdk-builtin"), env)


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Running]:
    env = {
        **_clean_env(),
        "CHATLENS_INFERENCE_BACKEND": "openai",
        "CHATLENS_OPENAI_BASE_URL": upstream.url,
        "CHATLENS_MODEL": "gpt-4o-mini",
        "CHATLENS_UPSTREAM_MAX_RETRIES": "0",
    }
    yield from _serve(tmp_path_factory.mktemp("sdk-openai"), env)


def _clean_env() -> dict[str, str]:
    import os

    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHATLENS_", "OTEL_")) and k not in ("DATABASE_URL", "LOG_LEVEL")
    }


def test_sync_non_streamed_answer_is_a_stored_conversation(builtin: Running) -> None:
    completion = builtin.sdk().chat.completions.with_raw_response.create(
        model="builtin-kb", messages=QUESTION, user="customer-42"
    )
    conversation_id = completion.headers["x-chatlens-conversation-id"]
    result = completion.parse()
    assert result.object == "chat.completion"
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].message.content
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.completion_tokens > 0
    assert result.model == "builtin-kb"
    stored = builtin.api(f"/api/conversations/{conversation_id}").json()
    assert stored["user"] == "customer-42"
    assert stored["platform"] == "api"
    messages = builtin.api(f"/api/conversations/{conversation_id}/messages").json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"] == result.choices[0].message.content


def test_sync_stream_with_usage(builtin: Running) -> None:
    stream = builtin.sdk().chat.completions.create(
        model="builtin-kb",
        messages=QUESTION,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    # As OpenAI streams: the role once, first, with empty content; then the words.
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert [c for c in chunks[1:] if c.choices and c.choices[0].delta.role] == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


@pytest.mark.asyncio
async def test_async_client_streams_and_continues_a_conversation(builtin: Running) -> None:
    client = builtin.async_sdk()
    first = await client.chat.completions.with_raw_response.create(
        model="builtin-kb", messages=QUESTION, metadata={"project_id": "shop", "platform": "web"}
    )
    conversation_id = first.headers["x-chatlens-conversation-id"]
    stream = await client.chat.completions.create(
        model="builtin-kb",
        messages=[*QUESTION, {"role": "user", "content": "I want a refund"}],
        stream=True,
        extra_headers={"X-Chatlens-Conversation-Id": conversation_id},
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text
    await client.close()
    stored = builtin.api(f"/api/conversations/{conversation_id}").json()
    assert stored["project_id"] == "shop"
    messages = builtin.api(f"/api/conversations/{conversation_id}/messages").json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


def test_models_are_listed(builtin: Running) -> None:
    models = builtin.sdk().models.list()
    assert [m.id for m in models.data] == ["builtin-kb"]


def test_sdk_errors(builtin: Running) -> None:
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        openai.OpenAI(
            base_url=f"{builtin.server.url}/v1", api_key="cl_wrong", max_retries=0
        ).models.list()
    assert unauthorized.value.status_code == 401
    with pytest.raises(openai.NotFoundError) as missing:
        builtin.sdk().chat.completions.create(model="gpt-9", messages=QUESTION)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as invalid:
        builtin.sdk().chat.completions.create(model="builtin-kb", messages=[])
    assert invalid.value.param == "messages"
    assert isinstance(invalid.value.body, dict)
    assert set(invalid.value.body) == {"message", "type", "param", "code"}


def test_relayed_to_an_upstream_with_its_usage(relayed: Running, upstream: FakeUpstream) -> None:
    result = relayed.sdk().chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert result.choices[0].message.content == "".join(WORDS)
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 3)
    chunks = list(
        relayed.sdk().chat.completions.create(
            model="gpt-4o-mini",
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(WORDS)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11


def test_upstream_failures_reach_the_sdk(relayed: Running) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        relayed.sdk().chat.completions.create(model="fail", messages=QUESTION)
    assert failed.value.status_code == 502
    stream = relayed.sdk().chat.completions.create(model="garbage", messages=QUESTION, stream=True)
    with pytest.raises(openai.APIError) as mid_stream:
        list(stream)
    assert "invalid JSON" in mid_stream.value.message


def test_a_client_that_leaves_mid_stream_still_gets_the_answer_stored(relayed: Running) -> None:
    headers = {"Authorization": f"Bearer {relayed.key}"}
    body = {"model": "slow-words:0.3", "messages": QUESTION, "stream": True}
    with httpx.stream(
        "POST", f"{relayed.server.url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        assert response.status_code == 200
        conversation_id = response.headers["x-chatlens-conversation-id"]
        for line in response.iter_lines():
            if '"content":"Hello"' in line:
                break  # the first word is in: leave
    deadline = time.monotonic() + 10
    messages: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        messages = relayed.api(f"/api/conversations/{conversation_id}/messages").json()["items"]
        if len(messages) == 2:
            break
        time.sleep(0.1)
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["status"] == "incomplete"
    assert str(messages[1]["content"]).startswith("Hello")
