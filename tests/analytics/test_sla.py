"""GET /api/sla: request-based availability and response time, from per-minute counts."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from chatlens import state
from chatlens.analytics import sla
from chatlens.app import create_app
from chatlens.auth import service as auth
from chatlens.db import migrate
from chatlens.db.base import utcnow
from chatlens.db.session import Database
from chatlens.models import RequestStat
from chatlens.observability.deps import Telemetry
from tests.helpers import make_settings

pytestmark = pytest.mark.asyncio


def stat(minutes_ago: int, status_class: str, count: int, latency_sum_ms: float, **le: int) -> Any:
    buckets = {
        f"le_{b}": le.get(f"le_{b}", count) for b in (100, 250, 500, 1000, 2000, 5000, 10000)
    }
    minute = (utcnow() - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    return RequestStat(
        id=uuid.uuid4(),
        minute=minute,
        route="/chat",
        status_class=status_class,
        count=count,
        latency_sum_ms=latency_sum_ms,
        **buckets,
    )


async def test_sla_from_hand_counted_minutes(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    async with sessionmaker() as session, session.begin():
        session.add_all(
            [
                # 998 good requests: 500 within 100 ms, 900 within 250, 990 within 500.
                stat(60, "2xx", 998, 998 * 200.0, le_100=500, le_250=900, le_500=990),
                stat(61, "5xx", 2, 100.0),
                stat(60 * 24 * 40, "5xx", 500, 1.0),  # 40 days ago: outside the window
            ]
        )
    response = await client.get("/api/sla", params={"window": "30d"}, headers=admin.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    # Admin's own request to /api/sla is counted too once flushed: read only the fixture's.
    assert body["requests"] >= 1000
    assert body["availability"]["errors"] == 2
    availability = body["availability"]
    assert availability["target"] == 0.999
    requests = body["requests"]
    assert availability["current"] == pytest.approx((requests - 2) / requests)
    assert availability["compliant"] is False
    # 0.1 % of 1,000 is 1 allowed error; 2 happened: the budget is overspent by one.
    assert availability["error_budget_remaining"] == pytest.approx(1 - 2 / (0.001 * requests))


async def test_p95_and_mean_are_interpolated_from_the_buckets(sessionmaker: Any) -> None:
    async with sessionmaker() as session, session.begin():
        session.add_all(
            [
                stat(5, "2xx", 998, 998 * 200.0, le_100=500, le_250=900, le_500=990),
                stat(6, "5xx", 2, 100.0),
            ]
        )
    async with sessionmaker() as session:
        result = await sla.compute(
            session, window="1h", uptime_target=0.999, response_time_target=0.3
        )
    assert (result.requests, result.errors) == (1000, 2)
    assert result.availability == pytest.approx(0.998)
    assert result.error_budget_remaining == pytest.approx(-1.0)
    # Cumulative: 502 <= 100 ms, 902 <= 250 ms, 992 <= 500 ms. Rank 950 lies 48/90 into
    # the 250-500 ms bucket: 250 + 250 * 48 / 90 = 383.3 ms.
    assert result.p95_seconds == pytest.approx(0.38333, abs=1e-4)
    assert result.mean_seconds == pytest.approx((998 * 200 + 100) / 1000 / 1000)


@pytest.mark.parametrize("window", ["0d", "367d", "abc", "30w", "", "1s"])
async def test_bad_windows_are_422(client: httpx.AsyncClient, admin: Any, window: str) -> None:
    response = await client.get("/api/sla", params={"window": window}, headers=admin.headers)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "validation_error"


async def test_only_admins(client: httpx.AsyncClient, account: Any) -> None:
    response = await client.get("/api/sla", headers=account.headers)
    assert response.status_code == 403


async def test_requests_are_counted_per_minute_not_written_one_by_one(
    app: Any, client: httpx.AsyncClient, account: Any, admin: Any, sessionmaker: Any
) -> None:
    await sla.flush(state.of(app).get(Telemetry).request_stats, sessionmaker)
    for _ in range(20):
        assert (await client.get("/api/me", headers=account.headers)).status_code == 200
    for _ in range(5):
        await client.get("/health/live")  # probes are not the service's traffic
    assert (await client.get("/api/nowhere", headers=account.headers)).status_code == 404
    async with sessionmaker() as session:
        before = await session.scalar(select(func.count()).select_from(RequestStat))
        counted_before = await session.scalar(select(func.sum(RequestStat.count))) or 0
    written = await sla.flush(state.of(app).get(Telemetry).request_stats, sessionmaker)
    assert 1 <= written <= 4  # /api/me 2xx and the 4xx, maybe split by a minute boundary
    async with sessionmaker() as session:
        after = await session.scalar(select(func.count()).select_from(RequestStat))
        counted = await session.scalar(select(func.sum(RequestStat.count)))
    assert after == before + written
    assert counted - counted_before == 21


async def test_counts_survive_a_restart(fresh_database_url: Any) -> None:
    settings = make_settings(await fresh_database_url("sla-restart"))
    await migrate.upgrade(settings)
    first = create_app(settings)
    async with first.router.lifespan_context(first):
        async with state.of(first).get(Database).sessionmaker() as session, session.begin():
            user = await auth.create_user(session, name="root", is_admin=True)
            _, key = await auth.create_key(session, user=user)
        transport = httpx.ASGITransport(app=first)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(7):
                await client.get("/api/me", headers={"Authorization": f"Bearer {key}"})
    # Shut down without any /api/sla call: the lifespan wrote the counts on its way out.
    second = create_app(settings)
    async with (
        second.router.lifespan_context(second),
        state.of(second).get(Database).sessionmaker() as session,
    ):
        counted = await session.scalar(select(func.sum(RequestStat.count)))
    assert counted == 7
