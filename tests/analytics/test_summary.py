"""GET /api/analytics/summary against a hand-counted week (the formulas of docs/analytics.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from chatlens.models import (
    Conversation,
    ConversationMetrics,
    ConversationStatus,
    Feedback,
    FeedbackKind,
    Message,
    MessageRole,
    RequestStat,
)

pytestmark = pytest.mark.asyncio

WEEK = {"start": "2026-01-01", "end": "2026-01-08"}


def at(day: int, hour: int = 10, minute: int = 0, month: int = 1, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


async def seed(sessionmaker: Any, user_id: uuid.UUID) -> None:
    def conversation(
        created: datetime,
        project: str,
        platform: str,
        external: str | None,
        *,
        status: ConversationStatus = ConversationStatus.open,
        outcome: str | None = None,
        resolved: datetime | None = None,
        escalated: datetime | None = None,
    ) -> Conversation:
        return Conversation(
            id=uuid.uuid4(),
            user_id=user_id,
            project_id=project,
            platform=platform,
            external_user_id=external,
            status=status,
            outcome=outcome,
            created_at=created,
            updated_at=created,
            resolved_at=resolved,
            escalated_at=escalated,
        )

    resolved, escalated = ConversationStatus.resolved, ConversationStatus.escalated
    c0 = conversation(
        at(31, 23, month=12, year=2025), "shop", "web", "u3", status=resolved,
        outcome="abandoned", resolved=at(1, 1),
    )  # fmt: skip
    c1 = conversation(
        at(2), "shop", "web", "u1", status=resolved, outcome="converted", resolved=at(2, 10, 10)
    )
    c2 = conversation(at(3), "shop", "web", "u1", status=escalated, escalated=at(3, 10, 5))
    c3 = conversation(
        at(4, 12), "shop", "telegram", "u2", status=resolved, outcome="resolved",
        resolved=at(4, 13),
    )  # fmt: skip
    c4 = conversation(at(5), "other", "web", None)

    def answer(c: Conversation, intent: str, labeled: str | None) -> Message:
        return Message(
            id=uuid.uuid4(),
            conversation_id=c.id,
            role=MessageRole.assistant,
            content="…",
            created_at=c.created_at + timedelta(seconds=5),
            project_id=c.project_id,
            intent=intent,
            labeled_intent=labeled,
        )

    a1 = answer(c1, "order_status", "order_status")
    a2 = answer(c2, "refund", "cancel_order")
    a3 = answer(c3, "delivery_time", None)
    a4 = answer(c4, "greeting", None)

    def fact(c: Conversation, m: Message, when: datetime, ms: float, ttft: float | None,
             tokens: int, cost: str, confidence: float = 0.5,
             escalated: bool = False) -> ConversationMetrics:  # fmt: skip
        return ConversationMetrics(
            id=uuid.uuid4(),
            timestamp=when,
            conversation_id=c.id,
            message_id=m.id,
            user_id=user_id,
            project_id=c.project_id,
            platform=c.platform,
            response_time_ms=ms,
            ttft_ms=ttft,
            prompt_tokens=tokens // 2,
            completion_tokens=tokens - tokens // 2,
            tokens_used=tokens,
            cost_usd=Decimal(cost),
            resolved=False,
            escalated=escalated,
            status="complete",
            intent=m.intent,
            confidence=confidence,
        )

    def feedback(
        c: Conversation, kind: FeedbackKind, score: int, m: Message | None = None
    ) -> Feedback:
        return Feedback(
            id=uuid.uuid4(),
            conversation_id=c.id,
            message_id=m.id if m else None,
            subject=str(m.id) if m else "",
            kind=kind,
            score=score,
            critical=False,
            created_at=c.created_at + timedelta(minutes=1),
            updated_at=c.created_at + timedelta(minutes=1),
        )

    rows: list[Any] = [c0, c1, c2, c3, c4, a1, a2, a3, a4]
    rows += [
        fact(c1, a1, at(2), 100, 10, 30, "0.01", confidence=0.9),
        fact(c2, a2, at(3), 200, 20, 40, "0.02", confidence=0.6, escalated=True),
        fact(c3, a3, at(4, 12), 300, None, 50, "0.03", confidence=0.8),
        fact(c4, a4, at(5), 1000, 40, 60, "0.04"),
        fact(c4, a4, at(9), 5000, 50, 70, "9.99"),  # the day after the range
    ]
    rate, csat, nps = FeedbackKind.rating, FeedbackKind.csat, FeedbackKind.nps
    rows += [feedback(c1, rate, 1, a1), feedback(c2, rate, 0, a2), feedback(c3, rate, 1, a3)]
    rows += [feedback(c1, csat, 5), feedback(c2, csat, 2), feedback(c3, csat, 4)]
    rows += [feedback(c1, nps, 10), feedback(c2, nps, 6), feedback(c3, nps, 8)]
    buckets = {f"le_{b}": 0 for b in (100, 250, 500, 1000, 2000, 5000, 10000)}
    for status_class, count in (("2xx", 99), ("5xx", 1)):
        rows.append(
            RequestStat(
                id=uuid.uuid4(),
                minute=at(2),
                route="/chat",
                status_class=status_class,
                count=count,
                latency_sum_ms=1.0,
                **buckets,
            )
        )
    async with sessionmaker() as session, session.begin():
        session.add_all(rows[:5])
        await session.flush()
        session.add_all(rows[5:9])
        await session.flush()
        session.add_all(rows[9:])


async def summary(client: httpx.AsyncClient, admin: Any, **params: str) -> Any:
    response = await client.get(
        "/api/analytics/summary", params={**WEEK, **params}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_every_number_of_a_hand_counted_week(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    await seed(sessionmaker, admin.id)
    body = await summary(client, admin)
    assert body["ai"] == {
        "turns": 4,
        "avg_response_ms": pytest.approx(400.0),
        "p95_response_ms": 1000.0,  # nearest rank: position ceil(0.95 * 4) = 4
        "avg_ttft_ms": pytest.approx(70 / 3),
        "intent_accuracy": 0.5,
        "labeled_turns": 2,
        "positive_rating_ratio": pytest.approx(2 / 3),
        "escalation_rate": 0.25,
        "escalations": 1,
    }
    assert body["business"] == {
        "conversations": 4,
        "csat": pytest.approx(2 / 3),
        "csat_mean": pytest.approx(11 / 3),
        "csat_responses": 3,
        "nps": 0.0,  # one promoter (10), one detractor (6), one passive (8)
        "nps_responses": 3,
        "conversion_rate": 0.25,
        "avg_resolution_seconds": pytest.approx((600 + 3600 + 7200) / 3),
        "median_resolution_seconds": 3600.0,
        "repeat_contact_rate": pytest.approx(1 / 3),
    }
    assert body["cost"] == {
        "tokens": 180,
        "cost_usd": pytest.approx(0.10),
        "cost_per_conversation": pytest.approx(0.025),
        "cost_per_resolved": pytest.approx(0.05),  # converted and resolved ones, not abandoned
    }
    assert body["technical"] == {
        "requests": 100,
        "error_rate": pytest.approx(0.01),
        "availability": pytest.approx(0.99),
    }


async def test_filters_narrow_every_part(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    await seed(sessionmaker, admin.id)
    shop = await summary(client, admin, project_id="shop")
    assert shop["ai"]["turns"] == 3
    assert shop["business"]["conversations"] == 3
    assert shop["cost"]["tokens"] == 120
    telegram = await summary(client, admin, platform="telegram")
    assert telegram["business"]["conversations"] == 1
    assert telegram["business"]["csat_responses"] == 1
    assert telegram["ai"]["intent_accuracy"] is None  # its one answer is not labeled


async def test_an_empty_range_is_zeros_and_nulls(client: httpx.AsyncClient, admin: Any) -> None:
    body = await summary(client, admin, start="2020-01-01", end="2020-01-02")
    assert body["ai"]["turns"] == 0
    assert body["ai"]["avg_response_ms"] is None
    assert body["business"]["csat"] is None
    assert body["cost"]["cost_per_conversation"] is None
    assert body["technical"]["availability"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"start": "2026-01-08", "end": "2026-01-01"},
        {"start": "2026-01-01", "end": "2026-01-01"},
        {"start": "2024-01-01", "end": "2026-01-01"},
        {"start": "yesterday"},
        {"platform": "fax"},
    ],
)
async def test_bad_ranges_are_422(
    client: httpx.AsyncClient, admin: Any, params: dict[str, str]
) -> None:
    response = await client.get("/api/analytics/summary", params=params, headers=admin.headers)
    assert response.status_code == 422


async def test_only_admins(client: httpx.AsyncClient, account: Any) -> None:
    response = await client.get("/api/analytics/summary", headers=account.headers)
    assert response.status_code == 403


async def test_intents_table(client: httpx.AsyncClient, admin: Any, sessionmaker: Any) -> None:
    await seed(sessionmaker, admin.id)
    response = await client.get("/api/analytics/intents", params=WEEK, headers=admin.headers)
    assert response.status_code == 200, response.text
    rows = {row["intent"]: row for row in response.json()["intents"]}
    assert list(rows) == ["delivery_time", "greeting", "order_status", "refund"]  # ties: by name
    assert rows["order_status"] == {
        "intent": "order_status",
        "turns": 1,
        "share": 0.25,
        "avg_confidence": pytest.approx(0.9),
        "escalation_rate": 0.0,
        "labeled_turns": 1,
        "accuracy": 1.0,
        "positive_rating_ratio": 1.0,
    }
    assert rows["refund"]["escalation_rate"] == 1.0
    assert rows["refund"]["accuracy"] == 0.0  # detected refund, labeled cancel_order
    assert rows["refund"]["positive_rating_ratio"] == 0.0
    assert rows["delivery_time"]["accuracy"] is None
    assert rows["greeting"]["positive_rating_ratio"] is None
    shop = await client.get(
        "/api/analytics/intents", params={**WEEK, "project_id": "shop"}, headers=admin.headers
    )
    assert "greeting" not in {row["intent"] for row in shop.json()["intents"]}


async def series(
    client: httpx.AsyncClient, admin: Any, metric: str, interval: str = "day", **params: str
) -> list[tuple[str, Any]]:
    response = await client.get(
        "/api/analytics/timeseries",
        params={**WEEK, "metric": metric, "interval": interval, **params},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    return [(p["start"][:13], p["value"]) for p in response.json()["points"]]


async def test_timeseries_per_day_week_and_hour(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    await seed(sessionmaker, admin.id)
    turns = await series(client, admin, "turns")
    assert turns == [
        ("2026-01-01T00", 0),
        ("2026-01-02T00", 1),
        ("2026-01-03T00", 1),
        ("2026-01-04T00", 1),
        ("2026-01-05T00", 1),
        ("2026-01-06T00", 0),
        ("2026-01-07T00", 0),
    ]
    assert [v for _, v in await series(client, admin, "csat")] == [
        None, 1.0, 0.0, 1.0, None, None, None,
    ]  # fmt: skip
    assert [v for _, v in await series(client, admin, "nps")][1:4] == [100.0, -100.0, 0.0]
    weeks = await series(client, admin, "turns", "week")
    assert weeks == [("2025-12-29T00", 3), ("2026-01-05T00", 1)]  # weeks start on Monday
    hours = dict(await series(client, admin, "cost_usd", "hour", end="2026-01-03"))
    assert hours["2026-01-02T10"] == pytest.approx(0.01)
    assert hours["2026-01-02T11"] == 0.0
    assert len(hours) == 48


async def test_timeseries_rejects_unknown_metrics(client: httpx.AsyncClient, admin: Any) -> None:
    response = await client.get(
        "/api/analytics/timeseries", params={"metric": "happiness"}, headers=admin.headers
    )
    assert response.status_code == 422
    assert "turns" in response.json()["error"]["message"]


async def test_timeseries_of_ratios_and_with_filters(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    await seed(sessionmaker, admin.id)
    ratings = [v for _, v in await series(client, admin, "positive_rating_ratio")]
    assert ratings[1:4] == [1.0, 0.0, 1.0]  # a1 up, a2 down, a3 up
    accuracy = [v for _, v in await series(client, admin, "intent_accuracy")]
    assert accuracy[1:3] == [1.0, 0.0]
    assert accuracy[3] is None  # a3 is not labeled
    availability = [v for _, v in await series(client, admin, "availability")]
    assert availability[1] == pytest.approx(0.99)
    # A platform filter reaches the feedback through its conversation, counted once.
    telegram = [v for _, v in await series(client, admin, "csat", platform="telegram")]
    assert telegram == [None, None, None, 1.0, None, None, None]
    shop = await series(client, admin, "conversations", project_id="shop")
    assert sum(v for _, v in shop) == 3


async def seeded_database(fresh_database_url: Any, label: str) -> str:
    """A fresh, migrated database holding `seed`'s conversations; returns its URL."""
    from chatlens.auth import service as auth
    from chatlens.db import migrate
    from chatlens.db.engine import create_engine, create_sessionmaker
    from tests.helpers import make_settings

    url: str = await fresh_database_url(label)
    settings = make_settings(url)
    await migrate.upgrade(settings)
    engine = create_engine(settings)
    try:
        maker = create_sessionmaker(engine)
        async with maker() as session, session.begin():
            user = await auth.create_user(session, name="owner")
        await seed(maker, user.id)
    finally:
        await engine.dispose()
    return url
