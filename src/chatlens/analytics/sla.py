"""The SLA: request-based availability and response time over a window, from request_stats."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatlens.analytics.repository import requests as repo
from chatlens.db.base import utcnow
from chatlens.errors import ValidationFailed
from chatlens.models import RequestStat
from chatlens.observability.request_stats import (
    LATENCY_BOUNDS_MS,
    RequestStats,
    quantile_from_buckets,
)
from chatlens.periodic import every

log = structlog.get_logger(__name__)

_WINDOW = re.compile(r"^(\d{1,6})([mhd])$")
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
MAX_WINDOW = timedelta(days=366)
# What the route accepts, in the OpenAPI description: 1-99999 minutes, 1-8784 hours (366
# days) or 1-366 days.
WINDOW_PATTERN = (
    "^([1-9][0-9]{0,4}m"
    "|([1-9][0-9]{0,2}|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-7][0-9]|878[0-4])h"
    "|([1-9][0-9]?|[12][0-9]{2}|3[0-5][0-9]|36[0-6])d)$"
)


def parse_window(text: str) -> timedelta:
    """`30d`, `12h`, `90m`: at least a minute, at most 366 days (else 422)."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValidationFailed("window: use a number and m, h or d, e.g. 30d")
    window = int(match.group(1)) * _UNIT[match.group(2)]
    if not timedelta(minutes=1) <= window <= MAX_WINDOW:
        raise ValidationFailed("window: between 1m and 366d")
    return window


async def flush(stats: RequestStats, sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Write what this process counted since the last flush; keep it for later on failure."""
    drained = stats.drain()
    if not drained:
        return 0
    rows = [
        RequestStat(
            id=uuid.uuid4(),
            minute=datetime.fromtimestamp(item.minute, UTC),
            route=item.route,
            status_class=item.status_class,
            count=item.count,
            latency_sum_ms=item.latency_sum_ms,
            **{f"le_{b}": n for b, n in zip(LATENCY_BOUNDS_MS, item.buckets, strict=True)},
        )
        for item in drained
    ]
    try:
        async with sessionmaker() as session, session.begin():
            repo.add(session, rows)
    except Exception as exc:
        stats.restore(drained)
        log.warning("request_stats_not_flushed", error=type(exc).__name__, rows=len(rows))
        raise
    return len(rows)


@asynccontextmanager
async def flushing(
    stats: RequestStats, sessionmaker: async_sessionmaker[AsyncSession], *, interval_s: float
) -> AsyncIterator[None]:
    """Every `interval_s`, this process's per-minute request counts go to request_stats; the
    last seconds' too when the block exits, so the SLA survives restarts."""

    async def flush_quietly() -> None:
        with contextlib.suppress(Exception):  # logged by flush; the counts are kept for later
            await flush(stats, sessionmaker)

    try:
        async with every(interval_s, flush_quietly):
            yield
    finally:
        await flush_quietly()


@dataclass(frozen=True)
class Sla:
    window: str
    start: datetime
    end: datetime
    requests: int
    errors: int
    availability: float | None
    availability_target: float
    error_budget_remaining: float | None
    mean_seconds: float | None
    p95_seconds: float | None
    response_time_target: float

    @property
    def availability_compliant(self) -> bool | None:
        """Availability at or above its target; None without requests."""
        if self.availability is None:
            return None
        return self.availability >= self.availability_target

    @property
    def response_time_compliant(self) -> bool | None:
        """p95 at or below its target; None without requests."""
        if self.p95_seconds is None:
            return None
        return self.p95_seconds <= self.response_time_target


async def current(
    session: AsyncSession,
    *,
    stats: RequestStats | None,
    sessionmaker: async_sessionmaker[AsyncSession],
    window: str,
    uptime_target: float,
    response_time_target: float,
) -> Sla:
    """The SLA over every replica's counts, this replica's latest (`stats`) flushed first."""
    if stats is not None:
        # The request's session lets its connection go first: on SQLite the pool holds one.
        await session.commit()
        await flush(stats, sessionmaker)
    return await compute(
        session,
        window=window,
        uptime_target=uptime_target,
        response_time_target=response_time_target,
    )


async def compute(
    session: AsyncSession,
    *,
    window: str,
    uptime_target: float,
    response_time_target: float,
) -> Sla:
    span = parse_window(window)
    end = utcnow()
    start = end - span
    totals = await repo.totals(session, start=start)
    count, errors = totals.count, totals.errors
    availability = (count - errors) / count if count else None
    allowed = (1 - uptime_target) * count
    budget = None if not count else (1 - errors / allowed if allowed > 0 else None)
    p95 = quantile_from_buckets(0.95, list(totals.buckets), count)
    return Sla(
        window=window,
        start=start,
        end=end,
        requests=count,
        errors=errors,
        availability=availability,
        availability_target=uptime_target,
        error_budget_remaining=budget,
        mean_seconds=totals.latency_sum_ms / count / 1000 if count else None,
        p95_seconds=p95 / 1000 if p95 is not None else None,
        response_time_target=response_time_target,
    )
