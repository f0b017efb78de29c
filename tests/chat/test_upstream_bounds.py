"""What an upstream sends is bounded like a client's input: absurd usage, names and text from
the model never cost a stored turn, a 500, a negative or runaway cost."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest
import structlog
from sqlalchemy import select
from structlog.testing import LogCapture

from chatlens import state
from chatlens.db.session import Database
from chatlens.inference import upstream as upstream_module
from chatlens.inference.upstream_wire import MAX_ANSWER_CHARS, model_ids
from chatlens.models import ConversationMetrics, Message, MessageRole
from tests.helpers import free_port, parse_sse
from tests.upstream import FakeUpstream
from tests.upstream_app import Running, running

pytestmark = pytest.mark.asyncio

# Priced (gpt-4o*: 2.50 in, 10.00 out per 1M): 10^12 tokens would be ten million dollars.
HOSTILE = "gpt-4o-hostile"
MODES = [("/chat", False), ("/chat", True), ("/v1", False), ("/v1", True)]


async def _turn(chatlens: Running, api: str, stream: bool, model: str) -> dict[str, Any]:
    """One question; what the client received: text, conversation, finish reason, model."""
    chatlens.use_model(model)
    if api == "/chat":
        response = await chatlens.client.post(
            "/chat",
            json={"message": "where is my order?", "stream": stream},
            headers=chatlens.headers,
        )
        assert response.status_code == 200, response.text
        if not stream:
            body = response.json()
            return {
                "text": body["reply"],
                "conversation": body["conversation_id"],
                "model": body["model"],
            }
        events = parse_sse(response.text)
        assert [name for name, _ in events][-1] == "done", events
        done = events[-1][1]
        text = "".join(data["content"] for name, data in events if name == "delta")
        return {"text": text, "conversation": done["conversation_id"], "model": done["model"]}
    body = {"model": model, "messages": [{"role": "user", "content": "where is my order?"}]}
    response = await chatlens.client.post(
        "/v1/chat/completions", json={**body, "stream": stream}, headers=chatlens.headers
    )
    assert response.status_code == 200, response.text
    conversation = response.headers["x-chatlens-conversation-id"]
    if not stream:
        completion = response.json()
        choice = completion["choices"][0]
        return {
            "text": choice["message"]["content"],
            "conversation": conversation,
            "finish_reason": choice["finish_reason"],
            "model": completion["model"],
        }
    lines = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    assert lines[-1] == "[DONE]", lines[-3:]
    chunks = [orjson.loads(line) for line in lines[:-1]]
    assert all("error" not in c for c in chunks), chunks
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    return {
        "text": text,
        "conversation": conversation,
        "finish_reason": next(r for r in reasons if r),
        "model": chunks[-1]["model"],
    }


async def _stored(chatlens: Running, conversation: str) -> tuple[Message, ConversationMetrics]:
    async with state.of(chatlens.app).get(Database).sessionmaker() as session:
        answer = await session.scalar(
            select(Message).where(
                Message.conversation_id == uuid.UUID(conversation),
                Message.role == MessageRole.assistant,
            )
        )
        fact = await session.scalar(
            select(ConversationMetrics).where(
                ConversationMetrics.conversation_id == uuid.UUID(conversation)
            )
        )
    assert answer is not None and fact is not None, "the turn was not stored"
    return answer, fact


@pytest.mark.parametrize(("api", "stream"), MODES)
async def test_absurd_usage_and_names_from_the_model_are_refused_and_the_turn_stored(
    chatlens: Running, api: str, stream: bool
) -> None:
    before = {
        name: chatlens.metric("upstream_values_rejected_total", field=name)
        for name in ("usage", "model", "finish_reason", "content")
    }
    received = await _turn(chatlens, api, stream, HOSTILE)

    # The client got the whole answer, NUL removed, under the model it asked for.
    assert received["text"] == "Hello from upstream"
    assert received["model"] == HOSTILE
    if api == "/v1":
        assert received["finish_reason"] == "stop"
    answer, fact = await _stored(chatlens, received["conversation"])
    assert answer.content == received["text"]
    assert answer.status.value == "complete"
    assert answer.model == fact.model == HOSTILE
    # The usage was not believed: chatlens counted the tokens itself, and the cost follows.
    assert 0 < answer.prompt_tokens == fact.prompt_tokens < 100
    assert 0 < answer.completion_tokens == fact.completion_tokens < 100
    assert answer.cost_usd is not None
    assert Decimal(0) < answer.cost_usd == fact.cost_usd < Decimal("0.01")
    assert 0 < chatlens.metric("ai_cost_usd_total", model=HOSTILE, project_id="default") < 0.01
    assert chatlens.metric("ai_tokens_total", model=HOSTILE, type="completion") > 0
    for name, count in before.items():
        after = chatlens.metric("upstream_values_rejected_total", field=name)
        assert after == count + 1, name


@pytest.mark.parametrize(("api", "stream"), [("/chat", True), ("/v1", False)])
async def test_an_endless_answer_is_cut_where_the_client_and_the_database_agree(
    chatlens: Running, api: str, stream: bool
) -> None:
    received = await _turn(chatlens, api, stream, "huge")
    assert len(received["text"]) == MAX_ANSWER_CHARS
    if api == "/v1":
        assert received["finish_reason"] == "length"
    answer, _ = await _stored(chatlens, received["conversation"])
    assert answer.content == received["text"]
    assert chatlens.metric("upstream_values_rejected_total", field="content") == 1


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ("long-line", "the model sent a line longer than 1024 KiB"),
        # Read in part, it does not parse: none of its text is passed on.
        ("huge-error", "the model failed (HTTP 500): an error too long to pass on"),
    ],
)
async def test_an_endless_line_or_error_body_fails_the_turn_with_a_502(
    chatlens: Running, model: str, said: str
) -> None:
    chatlens.use_model(model)
    response = await chatlens.client.post(
        "/chat", json={"message": "where is my order?"}, headers=chatlens.headers
    )
    assert response.status_code == 502, response.text
    assert response.json()["error"]["message"].startswith(said)
    streamed = await chatlens.client.post(
        "/chat", json={"message": "where is my order?", "stream": True}, headers=chatlens.headers
    )
    [error] = [data for name, data in parse_sse(streamed.text) if name == "error"]
    assert error["message"].startswith(said), error
    # Both turns are stored and counted as failed by the model, as any broken answer is.
    async with state.of(chatlens.app).get(Database).sessionmaker() as session:
        answers = (
            await session.scalars(select(Message).where(Message.role == MessageRole.assistant))
        ).all()
    assert [a.status.value for a in answers] == ["error", "error"]
    assert chatlens.metric("chat_turns_total", outcome="failed_upstream", stream="false") == 1
    assert chatlens.metric("chat_turns_total", outcome="failed_upstream", stream="true") == 1
    assert chatlens.metric("errors_total", error_type="upstream_error", service="ai") == 2


async def test_a_refused_connection_is_named_for_the_client_and_located_in_the_logs(
    fresh_database_url: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured = LogCapture()
    monkeypatch.setattr(upstream_module, "log", structlog.wrap_logger(None, processors=[captured]))
    port = free_port()  # nothing listens there
    url = await fresh_database_url("refused")
    async with running(url, FakeUpstream(port=port)) as chatlens:
        response = await chatlens.client.post(
            "/chat", json={"message": "my card number is 4111"}, headers=chatlens.headers
        )
        health = (await chatlens.client.get("/health")).json()
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    # Any key holder, and anyone on /health, learns what happened but not where the model
    # server lives on the internal network.
    error = response.json()["error"]
    assert error["message"] == "the model server refused the connection"
    assert health["services"]["ai_service"]["error"] == "the model server refused the connection"
    # The operator's log line has the same words and the address.
    [failed] = [line for line in captured.entries if line["event"] == "upstream_failed"]
    assert failed["reason"] == error["message"]
    assert failed["upstream"] == f"127.0.0.1:{port}"


async def test_the_model_list_keeps_only_names_chatlens_can_store() -> None:
    listed = [{"id": "gpt-4o"}, {"id": "m" * 300}, {"id": "nul\x00"}, {"id": 5}, "x", {"id": "a b"}]
    listed += [{"id": ["gpt-4o"]}, {"id": {"id": "gpt-4o"}}]
    assert model_ids(listed) == ["gpt-4o"]
    assert model_ids({"id": "not a list"}) == []
    assert len(model_ids([{"id": f"model-{i}"} for i in range(5000)])) == 1000
