"""GET /api/analytics/timeseries: a summary number per hour, day or week, grouped in SQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.analytics.filters import Filters
from chatlens.analytics.repository import timeseries as repo
from chatlens.analytics.repository.timeseries import Bucket, Interval
from chatlens.errors import ValidationFailed

__all__ = ["MAX_POINTS", "SERIES", "Interval", "observed", "timeseries"]

_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
MAX_POINTS = 24 * 366


def _floor(moment: datetime, interval: Interval) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    if interval in ("day", "week"):
        moment = moment.replace(hour=0)
    if interval == "week":
        moment -= timedelta(days=moment.weekday())
    return moment


@dataclass(frozen=True)
class Series:
    """A number per interval: what it reads, and its formula over what was read."""

    measure: repo.Measure
    finish: Callable[[Bucket], float | int | None]


def _count(b: Bucket) -> int:
    return int(b.value or 0)


def _total(b: Bucket) -> float:
    return b.value or 0.0


def _mean(b: Bucket) -> float | None:
    return b.value


def _ratio(b: Bucket) -> float | None:
    return (b.value or 0.0) / b.count if b.count else None


def _nps(b: Bucket) -> float | None:
    return None if not b.count else 100 * (b.value or 0.0) / b.count


def _availability(b: Bucket) -> float | None:
    return None if not b.count else 1 - (b.value or 0.0) / b.count


SERIES: dict[str, Series] = {
    "turns": Series(repo.TURNS, _count),
    "avg_response_ms": Series(repo.RESPONSE_MS, _mean),
    "avg_ttft_ms": Series(repo.TTFT_MS, _mean),
    "tokens": Series(repo.TOKENS, _count),
    "cost_usd": Series(repo.COST_USD, _total),
    "escalated_turns": Series(repo.ESCALATED_TURNS, _count),
    "conversations": Series(repo.CONVERSATIONS, _count),
    "escalation_rate": Series(repo.ESCALATED_CONVERSATIONS, _ratio),
    "conversion_rate": Series(repo.CONVERTED_CONVERSATIONS, _ratio),
    "csat": Series(repo.SATISFIED_CSAT, _ratio),
    "csat_mean": Series(repo.CSAT_SCORE, _mean),
    "nps": Series(repo.NPS_BALANCE, _nps),
    "positive_rating_ratio": Series(repo.UP_RATINGS, _ratio),
    "intent_accuracy": Series(repo.CORRECT_LABELS, _ratio),
    "escalations": Series(repo.ESCALATIONS, _count),
    "requests": Series(repo.REQUESTS, _count),
    "availability": Series(repo.SERVER_ERRORS, _availability),
    "error_rate": Series(repo.SERVER_ERRORS, _ratio),
}
# An interval without rows: each formula over zero rows (0 for counts, null for ratios).
_NOTHING = Bucket(start=datetime.min, value=0.0, count=0)


def _series(metric: str) -> Series:
    series = SERIES.get(metric)
    if series is None:
        raise ValidationFailed(f"metric: one of {', '.join(sorted(SERIES))}")
    return series


async def observed(
    session: AsyncSession, f: Filters, *, metric: str, interval: Interval
) -> dict[datetime, float | int | None]:
    """The intervals of the range that hold rows, with their number; empty ones are absent."""
    series = _series(metric)
    found = await repo.buckets(session, f, series.measure, interval=interval)
    return {bucket.start: series.finish(bucket) for bucket in found}


async def timeseries(
    session: AsyncSession, f: Filters, *, metric: str, interval: Interval
) -> list[tuple[datetime, float | int | None]]:
    """Every interval of the range, in order, with the number (0 or null when empty)."""
    series = _series(metric)
    first = _floor(f.start, interval)
    points = int((f.end - first) / _STEP[interval]) + 1
    if points > MAX_POINTS:
        raise ValidationFailed("interval: too many points for the range; use a longer interval")
    found = await observed(session, f, metric=metric, interval=interval)
    empty = series.finish(_NOTHING)
    result = []
    moment = first
    while moment < f.end:
        result.append((moment, found.get(moment, empty)))
        moment += _STEP[interval]
    return result
