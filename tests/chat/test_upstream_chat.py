"""POST /chat answered by an OpenAI-compatible upstream (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from chatlens.app import create_app
from chatlens.auth import service as auth
from chatlens.db import migrate
from chatlens.models import Conversation, ConversationMetrics, Message
from tests.helpers import make_settings
from tests.upstream import WORDS, FakeUpstream

pytestmark = pytest.mark.asyncio

MODEL = "gpt-4o-mini"  # the fake answers it as `ok`; the shipped price table knows it
# 11 prompt tokens of which 4 cached, 3 completion tokens, at 0.15 / 0.075 / 0.60 USD per 1M.
TURN_COST = (Decimal(7) * Decimal("0.15") + 4 * Decimal("0.075") + 3 * Decimal("0.60")) / 10**6


@dataclass
class Running:
    app: FastAPI
    client: httpx.AsyncClient
    headers: dict[str, str]

    def use_model(self, model: str) -> None:
        self.app.state.pipeline.model = model

    def metric(self, name: str, **labels: str) -> float:
        value = self.app.state.metrics.registry.get_sample_value(name, labels)
        return float(value or 0.0)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@asynccontextmanager
async def running(url: str, upstream: FakeUpstream, **overrides: Any) -> AsyncIterator[Running]:
    settings = make_settings(
        url,
        inference_backend="openai",
        openai_base_url=upstream.url,
        openai_api_key="sk-upstream-secret",
        model=MODEL,
        upstream_max_retries=1,
        upstream_first_token_timeout_s=0.5,
        **overrides,
    )
    await migrate.upgrade(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with app.state.sessionmaker() as session, session.begin():
            user = await auth.create_user(session, name=f"u-{uuid.uuid4().hex[:8]}")
            _, key = await auth.create_key(session, user=user)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://chatlens.test") as c:
            yield Running(app=app, client=c, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture
async def chatlens(fresh_database_url: Any, upstream: FakeUpstream) -> AsyncIterator[Running]:
    async with running(await fresh_database_url("upstream"), upstream) as result:
        yield result


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
    async with chatlens.app.state.sessionmaker() as session:
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
    async with chatlens.app.state.sessionmaker() as session:
        rows = (await session.scalars(select(Message).order_by(Message.created_at))).all()
    assert [m.content for m in rows if m.role == "user"] == ["where is my order?"]
    assert [m.status.value for m in rows if m.role == "assistant"] == ["error"]


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
    async with with_fallback.app.state.sessionmaker() as session:
        conversation = await session.get(Conversation, uuid.UUID(body["conversation_id"]))
    assert conversation is not None
    assert conversation.escalation_reason == "backend_error"
