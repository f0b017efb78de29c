"""POST /chat answered by an OpenAI-compatible upstream (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from chatlens import state
from chatlens.db.session import Database
from chatlens.models import Conversation, ConversationMetrics, Message
from tests.helpers import assert_documented_event, parse_sse
from tests.upstream import WORDS, FakeUpstream
from tests.upstream_app import MODEL, Running, running

pytestmark = pytest.mark.asyncio

# 11 prompt tokens of which 4 cached, 3 completion tokens, at 0.15 / 0.075 / 0.60 USD per 1M.
TURN_COST = (Decimal(7) * Decimal("0.15") + 4 * Decimal("0.075") + 3 * Decimal("0.60")) / 10**6


@pytest.fixture
async def with_fallback(fresh_database_url: Any, upstream: FakeUpstream) -> AsyncIterator[Running]:
    url = await fresh_database_url("fallback")
    async with running(url, upstream, fallback_to_builtin=True) as result:
        yield result


async def test_answers_are_stored_with_usage_and_cost_equal_to_the_metric(
    chatlens: Running,
) -> None:
    cost_before = chatlens.metric("ai_cost_usd_total", model=MODEL, project_id="default")
    for _ in range(3):
        response = await chatlens.client.post(
            "/chat", json={"message": "where is my order?"}, headers=chatlens.headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["reply"] == "".join(WORDS)
        assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
        assert body["intent"] == "order_status"
    async with state.of(chatlens.app).get(Database).sessionmaker() as session:
        stored = await session.scalar(
            select(func.sum(Message.cost_usd)).where(Message.role == "assistant")
        )
        facts = await session.scalar(select(func.sum(ConversationMetrics.cost_usd)))
    assert Decimal(stored) == Decimal(facts) == 3 * TURN_COST
    metric = chatlens.metric("ai_cost_usd_total", model=MODEL, project_id="default")
    assert round(metric - cost_before, 8) == float(3 * TURN_COST)
    tokens = chatlens.metric("ai_tokens_total", model=MODEL, type="prompt")
    assert tokens == 33


@pytest.mark.parametrize(
    ("model", "status", "error_type"),
    [
        ("fail", 502, "upstream_error"),
        ("garbage", 502, "upstream_error"),
        ("rate-limit:9", 503, "upstream_unavailable"),
        ("slow-first:3", 504, "upstream_timeout"),
        ("too-long", 400, "upstream_rejected"),
    ],
)
async def test_upstream_failures_map_to_clear_errors(
    chatlens: Running, model: str, status: int, error_type: str
) -> None:
    chatlens.use_model(model)
    errors_before = chatlens.metric("errors_total", error_type=error_type, service="ai")
    response = await chatlens.client.post(
        "/chat", json={"message": "where is my order?"}, headers=chatlens.headers
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["request_id"] == response.headers["x-request-id"]
    assert "sk-upstream-secret" not in response.text
    if status == 503:
        assert response.headers["retry-after"] == "1"
    if status == 400:
        assert "maximum context length" in error["message"]
    assert chatlens.metric("errors_total", error_type=error_type, service="ai") == (
        errors_before + 1
    )
    # Nothing the user sent is lost: the question is stored, the failed answer marked.
    async with state.of(chatlens.app).get(Database).sessionmaker() as session:
        rows = (await session.scalars(select(Message).order_by(Message.created_at))).all()
    assert [m.content for m in rows if m.role == "user"] == ["where is my order?"]
    assert [m.status.value for m in rows if m.role == "assistant"] == ["error"]


async def test_a_failure_mid_stream_is_a_documented_error_event(chatlens: Running) -> None:
    spec = (await chatlens.client.get("/openapi.json")).json()
    chatlens.use_model("fail")
    response = await chatlens.client.post(
        "/chat", json={"message": "where is my order?", "stream": True}, headers=chatlens.headers
    )
    [(name, data)] = parse_sse(response.text)
    assert (name, data) == ("error", {"type": "upstream_error", "message": data["message"]})
    assert_documented_event(spec, "/chat", name, data)


async def test_the_trace_continues_upstream(chatlens: Running, upstream: FakeUpstream) -> None:
    response = await chatlens.client.post(
        "/chat", json={"message": "hello"}, headers=chatlens.headers
    )
    assert response.status_code == 200
    call = [c for c in upstream.calls if c.model == MODEL][-1]
    assert call.headers["traceparent"].split("-")[1] == response.headers["x-trace-id"]


async def test_fallback_answers_with_the_builtin_bot_and_escalates(
    with_fallback: Running,
) -> None:
    with_fallback.use_model("fail")
    errors_before = with_fallback.metric("errors_total", error_type="upstream_error", service="ai")
    response = await with_fallback.client.post(
        "/chat", json={"message": "where is my order?"}, headers=with_fallback.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply"]
    assert body["escalated"] is True
    assert body["model"] == "builtin-kb"
    assert with_fallback.metric("errors_total", error_type="upstream_error", service="ai") == (
        errors_before + 1
    )
    assert with_fallback.metric("escalations_total", platform="web", reason="backend_error") == 1
    async with state.of(with_fallback.app).get(Database).sessionmaker() as session:
        conversation = await session.get(Conversation, uuid.UUID(body["conversation_id"]))
    assert conversation is not None
    assert conversation.escalation_reason == "backend_error"
