"""`chatlens simulate` fills the analytics through the real service, spread over days."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from chatlens.analytics import summary
from chatlens.db import migrate
from chatlens.db.base import utcnow
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.models import Conversation, ConversationMetrics, Feedback, Message
from tests.helpers import make_settings

pytestmark = pytest.mark.asyncio


async def test_simulated_traffic_lands_on_past_days_and_in_every_table(
    fresh_database_url: Any, env_without_chatlens: dict[str, str]
) -> None:
    url = await fresh_database_url("simulate")
    settings = make_settings(url)
    await migrate.upgrade(settings)

    args = ["simulate", "--conversations", "24", "--days", "6", "--seed", "7"]
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chatlens.cli", *args],
        env=env_without_chatlens | {"DATABASE_URL": url},  # logging at its default, INFO
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # stdout is the summary alone; stderr the database, one progress bar and no request logs.
    [line] = done.stdout.splitlines()
    assert line.startswith("simulated 24 conversations over 6 days")
    csat = int(re.search(r"(\d+) CSAT", line).group(1))  # type: ignore[union-attr]
    database, bar = done.stderr.splitlines()
    assert database.startswith("chatlens: database ")
    assert re.match(r"simulating .* 24/24 conversations", bar), bar

    engine = create_engine(settings)
    try:
        maker = create_sessionmaker(engine)
        async with maker() as session:
            days = {
                created.date()
                for created in (await session.scalars(select(Conversation.created_at))).all()
            }
            facts = await session.scalar(select(func.count()).select_from(ConversationMetrics))
            answers = await session.scalar(
                select(func.count()).select_from(Message).where(Message.role == "assistant")
            )
            feedback = await session.scalar(select(func.count()).select_from(Feedback))
            today = utcnow().date()
            numbers = await summary.summary(
                session,
                summary.Filters.from_dates(
                    today - timedelta(days=6), today + timedelta(days=1), None, None
                ),
            )
    finally:
        await engine.dispose()
    assert len(days) >= 3  # spread over the days, not all today
    assert all((today - day).days < 6 for day in days)
    assert facts == answers >= 24  # one fact row per answer, through the pipeline
    assert feedback and feedback > 0
    assert numbers["business"]["conversations"] == 24
    assert numbers["business"]["csat_responses"] == csat
    assert numbers["ai"]["escalations"] > 0
