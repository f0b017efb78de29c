"""GET /api/analytics/report and `chatlens report`: summary, change, anomalies."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from chatlens import state
from chatlens.analytics.report import bounds
from chatlens.cli import app as cli
from chatlens.models import ConversationMetrics
from chatlens.settings import Settings
from tests.analytics.conftest import Clock

pytestmark = pytest.mark.asyncio
FIRST = datetime(2026, 2, 1, 12, tzinfo=UTC)


def turn(user_id: uuid.UUID, at: datetime) -> ConversationMetrics:
    return ConversationMetrics(
        id=uuid.uuid4(),
        timestamp=at,
        conversation_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        user_id=user_id,
        project_id="default",
        platform="web",
        response_time_ms=100.0,
        prompt_tokens=1,
        completion_tokens=1,
        tokens_used=2,
        cost_usd=Decimal(0),
        resolved=False,
        escalated=False,
        status="complete",
    )


async def seed_turns(sessionmaker: Any, user_id: uuid.UUID) -> None:
    """Feb 1-14: 2, 3, 2, 3, ... turns a day; Feb 15: 10 turns."""
    counts = [2 + i % 2 for i in range(14)] + [10]
    rows = [
        turn(user_id, FIRST + timedelta(days=day, minutes=n))
        for day, count in enumerate(counts)
        for n in range(count)
    ]
    async with sessionmaker() as session, session.begin():
        session.add_all(rows)


QUIET_SUNDAYS = {date(2026, 1, 11), date(2026, 1, 25), date(2026, 2, 8)}


async def seed_months(sessionmaker: Any, user_id: uuid.UUID) -> None:
    """Jan 1 - Feb 14: 4, 5, 4, 5, ... turns a day, none on three Sundays, 20 on Feb 10;
    Feb 15: one turn at 09:00."""
    rows = [turn(user_id, datetime(2026, 2, 15, 9, tzinfo=UTC))]
    day = date(2026, 1, 1)
    while day < date(2026, 2, 15):
        count = 20 if day == date(2026, 2, 10) else 4 + day.day % 2
        if day not in QUIET_SUNDAYS:
            noon = datetime.combine(day, time(12), UTC)
            rows += [turn(user_id, noon + timedelta(minutes=n)) for n in range(count)]
        day += timedelta(days=1)
    async with sessionmaker() as session, session.begin():
        session.add_all(rows)


async def test_periods() -> None:
    day = datetime(2026, 2, 18).date()  # a Wednesday
    assert bounds("day", day) == (day, day + timedelta(days=1))
    assert [d.isoformat() for d in bounds("week", day)] == ["2026-02-16", "2026-02-23"]
    assert [d.isoformat() for d in bounds("month", day)] == ["2026-02-01", "2026-03-01"]


async def test_a_spike_is_an_anomaly_and_the_change_is_against_the_day_before(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any, clock: Clock
) -> None:
    await seed_turns(sessionmaker, admin.id)
    clock.now = datetime(2026, 2, 16, 9, tzinfo=UTC)
    response = await client.get(
        "/api/analytics/report",
        params={"period": "day", "date": "2026-02-15"},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["start"], body["end"]) == ("2026-02-15", "2026-02-16")
    assert (body["previous_start"], body["previous_end"]) == ("2026-02-14", "2026-02-15")
    turns = body["changes"]["ai.turns"]
    assert turns == {"current": 10, "previous": 3, "change": 7, "change_pct": pytest.approx(7 / 3)}
    [spike] = body["anomalies"]
    # The 28 days before: 14 without traffic (no data, not 0), seven 2s and seven 3s.
    assert spike["metric"] == "turns"
    assert spike["date"] == "2026-02-15"
    assert spike["mean"] == pytest.approx(2.5)
    assert spike["stdev"] == pytest.approx(0.5)
    quiet = await client.get(
        "/api/analytics/report",
        params={"period": "day", "date": "2026-02-14"},
        headers=admin.headers,
    )
    assert quiet.json()["anomalies"] == []


async def test_too_little_history_is_not_judged(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any, clock: Clock
) -> None:
    await seed_turns(sessionmaker, admin.id)
    clock.now = datetime(2026, 3, 1, tzinfo=UTC)
    # Mid-February's week holds the spike, but the avg_response_ms history is flat (σ 0),
    # and csat has no values at all: neither may report anything.
    body = (
        await client.get(
            "/api/analytics/report",
            params={"period": "week", "date": "2026-02-15"},
            headers=admin.headers,
        )
    ).json()
    assert {a["metric"] for a in body["anomalies"]} == {"turns"}


async def test_cli_report_in_markdown_and_json(app: Any, admin: Any, sessionmaker: Any) -> None:
    await seed_turns(sessionmaker, admin.id)
    url = state.of(app).get(Settings).database_url

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["report", *args], env={"DATABASE_URL": url})

    markdown = await asyncio.to_thread(run, "--period", "day", "--date", "2026-02-15")
    assert markdown.exit_code == 0, markdown.output
    assert "| ai.turns | 10 | 3 | +233.3% |" in markdown.output
    assert "2026-02-15 turns: 10" in markdown.output
    as_json = await asyncio.to_thread(
        run, "--period", "day", "--date", "2026-02-15", "--format", "json"
    )
    assert orjson.loads(as_json.stdout)["changes"]["ai.turns"]["current"] == 10
    bad = await asyncio.to_thread(run, "--period", "year")
    assert bad.exit_code == 2


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 2, 15, 12, tzinfo=UTC),  # mid-month, mid-day
        datetime(2026, 3, 2, 8, tzinfo=UTC),  # the month is over; its last two weeks empty
    ],
)
async def test_a_month_judges_only_days_that_are_over_and_have_data(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any, clock: Clock, now: datetime
) -> None:
    """Not today (one turn so far), not the days to come, not a Sunday without traffic:
    only the real spike."""
    await seed_months(sessionmaker, admin.id)
    clock.now = now
    response = await client.get(
        "/api/analytics/report",
        params={"period": "month", "date": "2026-02-15"},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["start"], body["end"]) == ("2026-02-01", "2026-03-01")
    assert [(a["metric"], a["date"]) for a in body["anomalies"]] == [("turns", "2026-02-10")]
    [spike] = body["anomalies"]
    # The 28 days before Feb 10 hold 27 days with data (Jan 25 had none): 4s and 5s.
    assert spike["value"] == 20
    assert spike["mean"] == pytest.approx(4.5, abs=0.05)


async def test_the_current_month_is_the_default_and_today_is_judged_tomorrow(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any, clock: Clock
) -> None:
    await seed_months(sessionmaker, admin.id)

    async def month() -> Any:
        response = await client.get(
            "/api/analytics/report", params={"period": "month"}, headers=admin.headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    clock.now = datetime(2026, 2, 10, 23, 59, tzinfo=UTC)  # the spike is still under way
    during = await month()
    assert during["start"] == "2026-02-01"
    assert during["anomalies"] == []
    clock.now = datetime(2026, 2, 11, tzinfo=UTC)
    assert [a["date"] for a in (await month())["anomalies"]] == ["2026-02-10"]
