"""GET /api/analytics/timeseries: a summary number per hour, day or week, grouped in SQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from chatlens.analytics.summary import Filters
from chatlens.errors import ValidationFailed
from chatlens.models import (
    Conversation,
    ConversationMetrics,
    Feedback,
    FeedbackKind,
    Message,
    MessageRole,
    RequestStat,
)

Interval = Literal["hour", "day", "week"]
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
MAX_POINTS = 24 * 366


def _bucket(column: Any, interval: Interval, dialect: str) -> ColumnElement[Any]:
    """The start of the interval a timestamp falls in, as text both databases agree on."""
    if dialect == "postgresql":
        truncated = func.date_trunc(interval, func.timezone("UTC", column))
        return func.to_char(truncated, literal_column("'YYYY-MM-DD HH24:00:00'"))
    if interval == "hour":
        return func.strftime("%Y-%m-%d %H:00:00", column)
    if interval == "day":
        return func.strftime("%Y-%m-%d 00:00:00", column)
    # ISO weeks start on Monday: step back to the Monday on or before the day.
    return func.strftime("%Y-%m-%d 00:00:00", func.date(column, "weekday 0", "-6 days"))


def _floor(moment: datetime, interval: Interval) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    if interval in ("day", "week"):
        moment = moment.replace(hour=0)
    if interval == "week":
        moment -= timedelta(days=moment.weekday())
    return moment


@dataclass(frozen=True)
class Series:
    """Where a number comes from: a table's time column, aggregates, and how to finish them."""

    time: Any
    columns: Sequence[ColumnElement[Any]]
    finish: Callable[[Sequence[Any]], float | int | None]
    where: Callable[[Filters], list[Any]]


def _ratio(part: Any, whole: Any) -> float | None:
    return float(part) / float(whole) if whole else None


def _facts(f: Filters) -> list[Any]:
    return f.facts()[2:]  # project and platform only: the range is applied per bucket query


def _conversations(f: Filters) -> list[Any]:
    return f.conversations()


def _labeled(f: Filters) -> list[Any]:
    # Labeled answers; the project and platform are the conversation's.
    owned = select(Conversation.id).where(*f.conversations())
    clauses: list[Any] = [
        Message.labeled_intent.is_not(None),
        Message.role == MessageRole.assistant,
    ]
    if f.conversations():
        clauses.append(Message.conversation_id.in_(owned))
    return clauses


def _feedback(kind: FeedbackKind) -> Callable[[Filters], list[Any]]:
    def where(f: Filters) -> list[Any]:
        clauses: list[Any] = [Feedback.kind == kind]
        if f.conversations():
            owned = select(Conversation.id).where(*f.conversations())
            clauses.append(Feedback.conversation_id.in_(owned))
        return clauses

    return where


CM, C, FB, RS, M = ConversationMetrics, Conversation, Feedback, RequestStat, Message
SERIES: dict[str, Series] = {
    "turns": Series(CM.timestamp, [func.count()], lambda r: int(r[0]), _facts),
    "avg_response_ms": Series(
        CM.timestamp, [func.avg(CM.response_time_ms)], lambda r: _float(r[0]), _facts
    ),
    "avg_ttft_ms": Series(CM.timestamp, [func.avg(CM.ttft_ms)], lambda r: _float(r[0]), _facts),
    "tokens": Series(CM.timestamp, [func.sum(CM.tokens_used)], lambda r: int(r[0] or 0), _facts),
    "cost_usd": Series(CM.timestamp, [func.sum(CM.cost_usd)], lambda r: float(r[0] or 0), _facts),
    "escalated_turns": Series(
        CM.timestamp,
        [func.sum(case((CM.escalated, 1), else_=0))],
        lambda r: int(r[0] or 0),
        _facts,
    ),
    "conversations": Series(C.created_at, [func.count()], lambda r: int(r[0]), _conversations),
    "escalation_rate": Series(
        C.created_at,
        [func.sum(case((C.escalated_at.is_not(None), 1), else_=0)), func.count()],
        lambda r: _ratio(r[0], r[1]),
        _conversations,
    ),
    "conversion_rate": Series(
        C.created_at,
        [func.sum(case((C.outcome == "converted", 1), else_=0)), func.count()],
        lambda r: _ratio(r[0], r[1]),
        _conversations,
    ),
    "csat": Series(
        FB.created_at,
        [func.sum(case((FB.score >= 4, 1), else_=0)), func.count()],
        lambda r: _ratio(r[0], r[1]),
        _feedback(FeedbackKind.csat),
    ),
    "csat_mean": Series(
        FB.created_at, [func.avg(FB.score)], lambda r: _float(r[0]), _feedback(FeedbackKind.csat)
    ),
    "nps": Series(
        FB.created_at,
        [
            func.sum(case((FB.score >= 9, 1), (FB.score <= 6, -1), else_=0)),
            func.count(),
        ],
        lambda r: None if not r[1] else 100 * float(r[0]) / float(r[1]),
        _feedback(FeedbackKind.nps),
    ),
    "positive_rating_ratio": Series(
        FB.created_at,
        [func.sum(FB.score), func.count()],
        lambda r: _ratio(r[0], r[1]),
        _feedback(FeedbackKind.rating),
    ),
    "intent_accuracy": Series(
        M.created_at,
        [func.sum(case((M.intent == M.labeled_intent, 1), else_=0)), func.count()],
        lambda r: _ratio(r[0], r[1]),
        _labeled,
    ),
    "escalations": Series(
        C.created_at,
        [func.sum(case((C.escalated_at.is_not(None), 1), else_=0))],
        lambda r: int(r[0] or 0),
        _conversations,
    ),
    "requests": Series(RS.minute, [func.sum(RS.count)], lambda r: int(r[0] or 0), lambda _: []),
    "availability": Series(
        RS.minute,
        [func.sum(case((RS.status_class == "5xx", RS.count), else_=0)), func.sum(RS.count)],
        lambda r: None if not r[1] else 1 - float(r[0]) / float(r[1]),
        lambda _: [],
    ),
    "error_rate": Series(
        RS.minute,
        [func.sum(case((RS.status_class == "5xx", RS.count), else_=0)), func.sum(RS.count)],
        lambda r: _ratio(r[0], r[1]),
        lambda _: [],
    ),
}


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


async def observed(
    session: AsyncSession, f: Filters, *, metric: str, interval: Interval
) -> dict[datetime, float | int | None]:
    """The intervals of the range that hold rows, with their number; empty ones are absent."""
    series = SERIES.get(metric)
    if series is None:
        raise ValidationFailed(f"metric: one of {', '.join(sorted(SERIES))}")
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    bucket = _bucket(series.time, interval, dialect).label("bucket")
    query = (
        select(bucket, *series.columns)
        .where(series.time >= f.start, series.time < f.end, *series.where(f))
        .group_by(bucket)
    )
    return {
        datetime.fromisoformat(str(row[0])).replace(tzinfo=UTC): series.finish(row[1:])
        for row in (await session.execute(query)).all()
    }


async def timeseries(
    session: AsyncSession, f: Filters, *, metric: str, interval: Interval
) -> list[tuple[datetime, float | int | None]]:
    """Every interval of the range, in order, with the number (0 or null when empty)."""
    series = SERIES.get(metric)
    if series is None:
        raise ValidationFailed(f"metric: one of {', '.join(sorted(SERIES))}")
    first = _floor(f.start, interval)
    points = int((f.end - first) / _STEP[interval]) + 1
    if points > MAX_POINTS:
        raise ValidationFailed("interval: too many points for the range; use a longer interval")
    found = await observed(session, f, metric=metric, interval=interval)
    empty = series.finish([0] * len(series.columns))
    result = []
    moment = first
    while moment < f.end:
        result.append((moment, found.get(moment, empty)))
        moment += _STEP[interval]
    return result
