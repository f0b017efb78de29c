"""Label values callers or an upstream choose are bounded: /metrics stays small, whatever
projects clients invent or model names an upstream sends."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatlens import state
from chatlens.app import create_app
from chatlens.auth import service as auth
from chatlens.db import migrate
from chatlens.db.session import Database
from chatlens.observability.metrics import OTHER, Metrics
from tests.helpers import make_settings

# docs/metrics.md, "Cardinality": what 3,000 projects and 300 models may add at most.
DOCUMENTED_GROWTH_BYTES = 64 * 1024


def _label_values(text: str, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if label in sample.labels
    }


@pytest.mark.asyncio
async def test_three_thousand_projects_fold_into_other_and_metrics_stay_small(
    fresh_database_url: Any,
) -> None:
    settings = make_settings(await fresh_database_url("cardinality"), metrics_projects="shop")
    await migrate.upgrade(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with state.of(app).get(Database).sessionmaker() as session, session.begin():
            user = await auth.create_user(session, name=f"u-{uuid.uuid4().hex[:8]}")
            _, key = await auth.create_key(session, user=user)
        headers = {"Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://chatlens.test") as c:
            await c.post("/chat", json={"message": "where is my order?"}, headers=headers)
            before = (await c.get("/metrics")).text
            deadline = time.monotonic() + 120
            for number in range(3000):
                assert time.monotonic() < deadline, "3,000 conversations took over 2 minutes"
                created = await c.post(
                    "/api/conversations", json={"project_id": f"p-{number}"}, headers=headers
                )
                assert created.status_code == 201, created.text
            shop = await c.post("/api/conversations", json={"project_id": "shop"}, headers=headers)
            assert shop.status_code == 201
            after = (await c.get("/metrics")).text

    projects = _label_values(after, "project_id")
    # The configured project and the first 100 seen keep their value; the rest are `other`.
    assert {"default", "shop", "p-0", "p-99", OTHER} <= projects
    assert "p-100" not in projects and "p-2999" not in projects
    assert len(projects) == 1 + 1 + 100 + 1
    assert len(after.encode()) - len(before.encode()) < DOCUMENTED_GROWTH_BYTES


def test_long_and_unknown_model_names_fold_into_other() -> None:
    metrics = Metrics(settings=make_settings("sqlite+aiosqlite://", model="gpt-4o-mini"))
    metrics.models.recognise(lambda name: name.startswith("gpt-4o-mini-"))  # priced, dated
    before = len(metrics.exposition(None)[0])
    names = [f"model-{number}-" + "x" * 290 for number in range(300)]  # 300 characters
    names += [f"tuned-{number}" for number in range(300)]
    for name in [*names, "gpt-4o-mini", "gpt-4o-mini-2024-07-18"]:
        metrics.ai_tokens.labels(name, "prompt").inc(3)
        metrics.ai_time_to_first_token.labels(name).observe(0.2)
        for project in range(3):
            metrics.ai_cost.labels(name, f"p-{project}").inc(0.001)
    text = metrics.exposition(None)[0].decode()

    models = _label_values(text, "model")
    assert {"gpt-4o-mini", "gpt-4o-mini-2024-07-18", "tuned-0", "tuned-19", OTHER} <= models
    assert not any(len(model) > 100 for model in models)
    assert "tuned-20" not in models
    # The configured model, a priced one, 20 others, `other`.
    assert len(models) == 1 + 1 + 20 + 1
    # Every prompt token is still counted, under one value or another.
    total = sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "ai_tokens_total"
    )
    assert total == 3 * len([*names, 1, 2])
    assert len(text.encode()) - before < DOCUMENTED_GROWTH_BYTES


def test_the_series_caps_are_those_docs_metrics_md_gives() -> None:
    metrics = Metrics(settings=make_settings("sqlite+aiosqlite://", model="gpt-4o-mini"))
    metrics.models.recognise(lambda name: True)  # a price table that prices every model
    # Bounded labels only: platforms (9) and token types (2) multiply these in the doc.
    assert metrics.chat_requests.max_series == metrics.conversations.max_series == 102
    assert metrics.ai_cost.max_series == 121 * 102
    assert metrics.ai_tokens.max_series == metrics.ai_time_to_first_token.max_series == 121
    assert metrics.escalations.max_series == 25
