"""The reads of the time series: one or two aggregates per hour, day or week, in SQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens import models
from chatlens.analytics.filters import Filters
from chatlens.analytics.repository import scope

Interval = Literal["hour", "day", "week"]
CM, C, FB, RS, M = (
    models.ConversationMetrics,
    models.Conversation,
    models.Feedback,
    models.RequestStat,
    models.Message,
)


@dataclass(frozen=True)
class Measure:
    """What a series reads: a table's time column, an aggregate `value` and, for a ratio,
    the aggregate `count` it is divided by; `where` narrows the rows to the filters."""

    time: Any
    value: ColumnElement[Any]
    where: Callable[[Filters, Any], list[ColumnElement[bool]]]
    count: ColumnElement[Any] | None = None


@dataclass(frozen=True)
class Bucket:
    start: datetime  # UTC
    value: float | None  # None: no row had one (a mean over nothing)
    count: int


def _facts(f: Filters, time: Any) -> list[ColumnElement[bool]]:
    return scope.where(f, time=time, project=CM.project_id, platform=CM.platform)


def _conversations(f: Filters, time: Any) -> list[ColumnElement[bool]]:
    return scope.conversations(f, time=time)


def _feedback(kind: models.FeedbackKind) -> Callable[[Filters, Any], list[ColumnElement[bool]]]:
    def where(f: Filters, time: Any) -> list[ColumnElement[bool]]:
        return [
            *scope.where(f, time=time),
            FB.kind == kind,
            *scope.owned(f, FB.conversation_id),
        ]

    return where


def _labeled(f: Filters, time: Any) -> list[ColumnElement[bool]]:
    # Labeled answers; the project and platform are the conversation's.
    return [
        *scope.where(f, time=time),
        M.labeled_intent.is_not(None),
        M.role == models.MessageRole.assistant,
        *scope.owned(f, M.conversation_id),
    ]


def _requests(f: Filters, time: Any) -> list[ColumnElement[bool]]:
    return scope.where(f, time=time)  # requests are counted per route, not per project


_ESCALATED = func.sum(case((C.escalated_at.is_not(None), 1), else_=0))
_SERVER_ERRORS = func.sum(case((RS.status_class == "5xx", RS.count), else_=0))

TURNS = Measure(CM.timestamp, func.count(), _facts)
RESPONSE_MS = Measure(CM.timestamp, func.avg(CM.response_time_ms), _facts)
TTFT_MS = Measure(CM.timestamp, func.avg(CM.ttft_ms), _facts)
TOKENS = Measure(CM.timestamp, func.sum(CM.tokens_used), _facts)
COST_USD = Measure(CM.timestamp, func.sum(CM.cost_usd), _facts)
ESCALATED_TURNS = Measure(CM.timestamp, func.sum(case((CM.escalated, 1), else_=0)), _facts)
CONVERSATIONS = Measure(C.created_at, func.count(), _conversations)
ESCALATED_CONVERSATIONS = Measure(C.created_at, _ESCALATED, _conversations, func.count())
CONVERTED_CONVERSATIONS = Measure(
    C.created_at,
    func.sum(case((C.outcome == "converted", 1), else_=0)),
    _conversations,
    func.count(),
)
SATISFIED_CSAT = Measure(
    FB.created_at,
    func.sum(case((FB.score >= 4, 1), else_=0)),
    _feedback(models.FeedbackKind.csat),
    func.count(),
)
CSAT_SCORE = Measure(FB.created_at, func.avg(FB.score), _feedback(models.FeedbackKind.csat))
# Promoters count +1, detractors -1, over all responses.
NPS_BALANCE = Measure(
    FB.created_at,
    func.sum(case((FB.score >= 9, 1), (FB.score <= 6, -1), else_=0)),
    _feedback(models.FeedbackKind.nps),
    func.count(),
)
UP_RATINGS = Measure(
    FB.created_at, func.sum(FB.score), _feedback(models.FeedbackKind.rating), func.count()
)
CORRECT_LABELS = Measure(
    M.created_at, func.sum(case((M.intent == M.labeled_intent, 1), else_=0)), _labeled, func.count()
)
ESCALATIONS = Measure(C.created_at, _ESCALATED, _conversations)
REQUESTS = Measure(RS.minute, func.sum(RS.count), _requests)
SERVER_ERRORS = Measure(RS.minute, _SERVER_ERRORS, _requests, func.sum(RS.count))


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


async def buckets(
    session: AsyncSession, f: Filters, measure: Measure, *, interval: Interval
) -> list[Bucket]:
    """The intervals of the range that hold rows, with the measure; empty ones are absent."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    bucket = _bucket(measure.time, interval, dialect).label("bucket")
    columns = [measure.value] if measure.count is None else [measure.value, measure.count]
    query = select(bucket, *columns).where(*measure.where(f, measure.time)).group_by(bucket)
    return [
        Bucket(
            start=datetime.fromisoformat(str(row[0])).replace(tzinfo=UTC),
            value=float(row[1]) if row[1] is not None else None,
            count=int(row[2] or 0) if measure.count is not None else 0,
        )
        for row in (await session.execute(query)).all()
    ]
