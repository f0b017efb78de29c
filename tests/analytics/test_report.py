"""GET /api/analytics/report and `chatlens report`: summary, change, anomalies."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from chatlens.analytics.report import bounds
from chatlens.cli import app as cli
from chatlens.models import ConversationMetrics

pytestmark = pytest.mark.asyncio
FIRST = datetime(2026, 2, 1, 12, tzinfo=UTC)


async def seed_turns(sessionmaker: Any, user_id: uuid.UUID) -> None:
    """Feb 1-14: 2, 3, 2, 3, ... turns a day; Feb 15: 10 turns."""
    counts = [2 + i % 2 for i in range(14)] + [10]
    rows = []
    for day, count in enumerate(counts):
        for n in range(count):
            rows.append(
                ConversationMetrics(
                    id=uuid.uuid4(),
                    timestamp=FIRST + timedelta(days=day, minutes=n),
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
            )
    async with sessionmaker() as session, session.begin():
        session.add_all(rows)


async def test_periods() -> None:
    day = datetime(2026, 2, 18).date()  # a Wednesday
    assert bounds("day", day) == (day, day + timedelta(days=1))
    assert [d.isoformat() for d in bounds("week", day)] == ["2026-02-16", "2026-02-23"]
    assert [d.isoformat() for d in bounds("month", day)] == ["2026-02-01", "2026-03-01"]


async def test_a_spike_is_an_anomaly_and_the_change_is_against_the_day_before(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    await seed_turns(sessionmaker, admin.id)
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
    # The 28 days before: 14 empty (0), seven 2s and seven 3s: mean 1.25, σ = √1.6875.
    assert spike["metric"] == "turns"
    assert spike["date"] == "2026-02-15"
    assert spike["mean"] == pytest.approx(1.25)
    assert spike["stdev"] == pytest.approx(1.6875**0.5)
    quiet = await client.get(
        "/api/analytics/report",
        params={"period": "day", "date": "2026-02-14"},
        headers=admin.headers,
    )
    assert quiet.json()["anomalies"] == []


async def test_too_little_history_is_not_judged(
    client: httpx.AsyncClient, admin: Any, sessionmaker: Any
) -> None:
    await seed_turns(sessionmaker, admin.id)
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
    url = app.state.settings.database_url

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, ["report", *args], env={"DATABASE_URL": url})

    markdown = await asyncio.to_thread(run, "--period", "day", "--date", "2026-02-15")
    assert markdown.exit_code == 0, markdown.output
    assert "| ai.turns | 10 | 3 | +233.3% |" in markdown.output
    assert "2026-02-15 turns: 10" in markdown.output
    as_json = await asyncio.to_thread(
        run, "--period", "day", "--date", "2026-02-15", "--format", "json"
    )
    assert orjson.loads(as_json.output)["changes"]["ai.turns"]["current"] == 10
    bad = await asyncio.to_thread(run, "--period", "year")
    assert bad.exit_code == 2
