"""The reads of the summary and the intents table: totals and the rows their formulas need."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, ColumnExpressionArgument, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.analytics.filters import Filters
from chatlens.analytics.repository import scope
from chatlens.models import (
    Conversation,
    ConversationMetrics,
    Feedback,
    FeedbackKind,
    Message,
    MessageRole,
)

CM = ConversationMetrics


def _turns(f: Filters) -> list[Any]:
    return scope.where(f, time=CM.timestamp, project=CM.project_id, platform=CM.platform)


def _hits(condition: ColumnExpressionArgument[bool]) -> ColumnElement[Any]:
    """How many rows meet `condition`: 0, not NULL, over no rows."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


@dataclass(frozen=True)
class TurnTotals:
    turns: int
    avg_response_ms: float | None
    avg_ttft_ms: float | None
    tokens: int
    cost_usd: Decimal
    p95_response_ms: float | None  # nearest rank


def _p95_in_aggregate(session: AsyncSession) -> bool:
    """PostgreSQL computes the nearest-rank p95 (percentile_disc) in the same scan as the rest."""
    return session.bind is not None and session.bind.dialect.name == "postgresql"


async def _response_ms_at(session: AsyncSession, f: Filters, position: int) -> float | None:
    """The response time at a 1-based position of the ascending order."""
    query = (
        select(CM.response_time_ms)
        .where(*_turns(f))
        .order_by(CM.response_time_ms)
        .offset(position - 1)
        .limit(1)
    )
    return _float(await session.scalar(query))


async def turn_totals(session: AsyncSession, f: Filters) -> TurnTotals:
    """The range's turns: count, means, sums and the p95 response time."""
    columns: list[Any] = [
        func.count(),
        func.avg(CM.response_time_ms),
        func.avg(CM.ttft_ms),
        func.coalesce(func.sum(CM.tokens_used), 0),
        func.coalesce(func.sum(CM.cost_usd), 0),
    ]
    in_aggregate = _p95_in_aggregate(session)
    if in_aggregate:  # percentile_disc is the nearest rank
        columns.append(func.percentile_disc(0.95).within_group(CM.response_time_ms))
    row = (await session.execute(select(*columns).where(*_turns(f)))).one()
    turns = int(row[0])
    if in_aggregate:
        p95 = _float(row[5])
    elif turns:  # SQLite: a second query reads the value at the nearest rank, ⌈0.95 n⌉
        p95 = await _response_ms_at(session, f, max(1, math.ceil(0.95 * turns)))
    else:
        p95 = None
    return TurnTotals(
        turns=turns,
        avg_response_ms=_float(row[1]),
        avg_ttft_ms=_float(row[2]),
        tokens=int(row[3]),
        cost_usd=Decimal(row[4]),
        p95_response_ms=p95,
    )


@dataclass(frozen=True)
class Counted:
    """How many rows, and how many of them count for the number (correct, positive…)."""

    total: int
    hits: int


async def labeled_answers(session: AsyncSession, f: Filters) -> Counted:
    """Answers of the range an operator labeled, and those whose detected intent agrees."""
    row = (
        await session.execute(
            select(func.count(), _hits(Message.intent == Message.labeled_intent))
            .select_from(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.role == MessageRole.assistant,
                Message.labeled_intent.is_not(None),
                *scope.conversations(f, time=Message.created_at),
            )
        )
    ).one()
    return Counted(total=int(row[0]), hits=int(row[1]))


async def answer_ratings(session: AsyncSession, f: Filters) -> Counted:
    """Answer ratings given in the range, and the `up` ones (score 1)."""
    row = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(Feedback.score), 0))
            .select_from(Feedback)
            .join(Conversation, Conversation.id == Feedback.conversation_id)
            .where(
                Feedback.kind == FeedbackKind.rating,
                *scope.conversations(f, time=Feedback.created_at),
            )
        )
    ).one()
    return Counted(total=int(row[0]), hits=int(row[1]))


@dataclass(frozen=True)
class ConversationTotals:
    conversations: int
    escalations: int
    conversions: int


async def conversation_totals(session: AsyncSession, f: Filters) -> ConversationTotals:
    """Conversations created in the range, the escalated ones and the converted ones."""
    row = (
        await session.execute(
            select(
                func.count(),
                _hits(Conversation.escalated_at.is_not(None)),
                _hits(Conversation.outcome == "converted"),
            ).where(*scope.conversations(f, time=Conversation.created_at))
        )
    ).one()
    return ConversationTotals(
        conversations=int(row[0]), escalations=int(row[1]), conversions=int(row[2])
    )


@dataclass(frozen=True)
class Score:
    kind: FeedbackKind
    score: int


async def survey_scores(session: AsyncSession, f: Filters) -> list[Score]:
    """Every CSAT and NPS response given in the range."""
    rows = (
        await session.execute(
            select(Feedback.kind, Feedback.score)
            .join(Conversation, Conversation.id == Feedback.conversation_id)
            .where(
                Feedback.kind.in_((FeedbackKind.csat, FeedbackKind.nps)),
                *scope.conversations(f, time=Feedback.created_at),
            )
        )
    ).all()
    return [Score(kind=kind, score=score) for kind, score in rows]


@dataclass(frozen=True)
class Resolution:
    created_at: datetime
    resolved_at: datetime
    outcome: str | None


async def resolutions(session: AsyncSession, f: Filters) -> list[Resolution]:
    """Conversations resolved in the range (any outcome)."""
    rows = (
        await session.execute(
            select(Conversation.created_at, Conversation.resolved_at, Conversation.outcome).where(
                *scope.conversations(f, time=Conversation.resolved_at)
            )
        )
    ).all()
    # The range on resolved_at leaves no row without one; the test says so to the types.
    return [Resolution(created_at=c, resolved_at=r, outcome=o) for c, r, o in rows if r is not None]


@dataclass(frozen=True)
class Contact:
    customer: str
    started: datetime


async def contacts(session: AsyncSession, f: Filters, *, since: datetime) -> list[Contact]:
    """Conversations with a known customer created from `since` to the range's end, by
    customer then time."""
    rows = (
        await session.execute(
            select(Conversation.external_user_id, Conversation.created_at)
            .where(
                Conversation.external_user_id.is_not(None),
                *scope.conversations(replace(f, start=since), time=Conversation.created_at),
            )
            .order_by(Conversation.external_user_id, Conversation.created_at)
        )
    ).all()
    return [
        Contact(customer=customer, started=started)
        for customer, started in rows
        if customer is not None  # as the query asks: the types cannot tell
    ]


@dataclass(frozen=True)
class IntentTurns:
    intent: str
    turns: int
    avg_confidence: float | None
    escalated: int


async def intent_turns(session: AsyncSession, f: Filters) -> list[IntentTurns]:
    """Per detected intent (`unknown` without one): turns, mean confidence, escalated turns."""
    unknown = func.coalesce(CM.intent, "unknown")
    rows = (
        await session.execute(
            select(
                unknown,
                func.count(),
                func.avg(CM.confidence),
                _hits(CM.escalated),
            )
            .where(*_turns(f))
            .group_by(unknown)
        )
    ).all()
    return [
        IntentTurns(intent=i, turns=int(n), avg_confidence=_float(c), escalated=int(e or 0))
        for i, n, c, e in rows
    ]


async def intent_labels(session: AsyncSession, f: Filters) -> dict[str, Counted]:
    """Per detected intent: labeled answers of the range, and those the label agrees with."""
    detected = func.coalesce(Message.intent, "unknown")
    rows = (
        await session.execute(
            select(detected, func.count(), _hits(Message.intent == Message.labeled_intent))
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.labeled_intent.is_not(None),
                *scope.conversations(f, time=Message.created_at),
            )
            .group_by(detected)
        )
    ).all()
    return {i: Counted(total=int(n), hits=int(h)) for i, n, h in rows}


async def intent_ratings(session: AsyncSession, f: Filters) -> dict[str, Counted]:
    """Per detected intent of the rated answer: ratings given in the range, and `up` ones."""
    detected = func.coalesce(Message.intent, "unknown")
    rows = (
        await session.execute(
            select(detected, func.count(), func.sum(Feedback.score))
            .join(Message, Message.id == Feedback.message_id)
            .join(Conversation, Conversation.id == Feedback.conversation_id)
            .where(
                Feedback.kind == FeedbackKind.rating,
                *scope.conversations(f, time=Feedback.created_at),
            )
            .group_by(detected)
        )
    ).all()
    return {i: Counted(total=int(n), hits=int(h or 0)) for i, n, h in rows}
