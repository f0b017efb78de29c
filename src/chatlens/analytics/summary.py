"""GET /api/analytics/summary: every number has one formula, written in docs/analytics.md."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

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

MAX_RANGE = timedelta(days=366)
REPEAT_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class Filters:
    start: datetime  # inclusive, UTC midnight
    end: datetime  # exclusive
    project_id: str | None = None
    platform: str | None = None

    @classmethod
    def from_dates(
        cls,
        start: date,
        end: date,
        project_id: str | None,
        platform: str | None,
        *,
        max_range: timedelta | None = MAX_RANGE,
    ) -> Filters:
        """`max_range` None: any length (an export streams its rows; a summary holds them)."""
        if end <= start:
            raise ValidationFailed("end: must be after start (end is exclusive)")
        if max_range is not None and end - start > max_range:
            raise ValidationFailed(f"end: a range covers at most {max_range.days} days")
        return cls(
            start=datetime.combine(start, time.min, UTC),
            end=datetime.combine(end, time.min, UTC),
            project_id=project_id,
            platform=platform,
        )

    def conversations(self) -> list[Any]:
        clauses = []
        if self.project_id is not None:
            clauses.append(Conversation.project_id == self.project_id)
        if self.platform is not None:
            clauses.append(Conversation.platform == self.platform)
        return clauses

    def facts(self) -> list[Any]:
        clauses = [
            ConversationMetrics.timestamp >= self.start,
            ConversationMetrics.timestamp < self.end,
        ]
        if self.project_id is not None:
            clauses.append(ConversationMetrics.project_id == self.project_id)
        if self.platform is not None:
            clauses.append(ConversationMetrics.platform == self.platform)
        return clauses


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _p95_in_aggregate(session: AsyncSession) -> bool:
    """PostgreSQL computes the nearest-rank p95 (percentile_disc) in the same scan as the rest."""
    return session.bind is not None and session.bind.dialect.name == "postgresql"


async def _p95_response_ms(session: AsyncSession, f: Filters, turns: int) -> float | None:
    """Nearest rank: the value at position ceil(0.95 n) of the ascending response times."""
    if not turns:
        return None
    offset = max(1, math.ceil(0.95 * turns)) - 1
    query = (
        select(ConversationMetrics.response_time_ms)
        .where(*f.facts())
        .order_by(ConversationMetrics.response_time_ms)
        .offset(offset)
        .limit(1)
    )
    value = await session.scalar(query)
    return float(value) if value is not None else None


async def ai_numbers(session: AsyncSession, f: Filters) -> dict[str, Any]:
    columns: list[Any] = [
        func.count(),
        func.avg(ConversationMetrics.response_time_ms),
        func.avg(ConversationMetrics.ttft_ms),
        func.coalesce(func.sum(ConversationMetrics.tokens_used), 0),
        func.coalesce(func.sum(ConversationMetrics.cost_usd), 0),
    ]
    in_aggregate = _p95_in_aggregate(session)
    if in_aggregate:  # percentile_disc is the nearest rank
        columns.append(
            func.percentile_disc(0.95).within_group(ConversationMetrics.response_time_ms)
        )
    row = (await session.execute(select(*columns).where(*f.facts()))).one()
    turns, avg_response, avg_ttft, tokens, cost = row[:5]
    if in_aggregate:
        p95_response_ms = float(row[5]) if row[5] is not None else None
    else:  # SQLite: a second query finds it
        p95_response_ms = await _p95_response_ms(session, f, int(turns))
    labeled = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(
                    func.sum(case((Message.intent == Message.labeled_intent, 1), else_=0)), 0
                ),
            )
            .select_from(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.role == MessageRole.assistant,
                Message.labeled_intent.is_not(None),
                Message.created_at >= f.start,
                Message.created_at < f.end,
                *f.conversations(),
            )
        )
    ).one()
    ratings = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(Feedback.score), 0))
            .select_from(Feedback)
            .join(Conversation, Conversation.id == Feedback.conversation_id)
            .where(
                Feedback.kind == FeedbackKind.rating,
                Feedback.created_at >= f.start,
                Feedback.created_at < f.end,
                *f.conversations(),
            )
        )
    ).one()
    return {
        "turns": int(turns),
        "avg_response_ms": float(avg_response) if avg_response is not None else None,
        "p95_response_ms": p95_response_ms,
        "avg_ttft_ms": float(avg_ttft) if avg_ttft is not None else None,
        "labeled_turns": int(labeled[0]),
        "intent_accuracy": _ratio(int(labeled[1]), int(labeled[0])),
        "positive_rating_ratio": _ratio(int(ratings[1]), int(ratings[0])),
        "_tokens": int(tokens),
        "_cost": Decimal(cost),
    }


async def business_numbers(session: AsyncSession, f: Filters) -> dict[str, Any]:
    created = [Conversation.created_at >= f.start, Conversation.created_at < f.end]
    row = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(
                    func.sum(case((Conversation.escalated_at.is_not(None), 1), else_=0)), 0
                ),
                func.coalesce(func.sum(case((Conversation.outcome == "converted", 1), else_=0)), 0),
            ).where(*created, *f.conversations())
        )
    ).one()
    conversations, escalations, conversions = (int(v) for v in row)

    scores = (
        await session.execute(
            select(Feedback.kind, Feedback.score)
            .join(Conversation, Conversation.id == Feedback.conversation_id)
            .where(
                Feedback.kind.in_((FeedbackKind.csat, FeedbackKind.nps)),
                Feedback.created_at >= f.start,
                Feedback.created_at < f.end,
                *f.conversations(),
            )
        )
    ).all()
    csat = [score for kind, score in scores if kind is FeedbackKind.csat]
    nps = [score for kind, score in scores if kind is FeedbackKind.nps]
    promoters = sum(1 for s in nps if s >= 9)
    detractors = sum(1 for s in nps if s <= 6)

    resolved_rows = (
        await session.execute(
            select(Conversation.created_at, Conversation.resolved_at, Conversation.outcome).where(
                Conversation.resolved_at >= f.start,
                Conversation.resolved_at < f.end,
                *f.conversations(),
            )
        )
    ).all()
    durations = [(r.resolved_at - r.created_at).total_seconds() for r in resolved_rows]
    resolved = sum(1 for r in resolved_rows if r.outcome in ("resolved", "converted"))

    # Repeat contacts: each conversation of the range with a known customer, and whether
    # that customer had started another one in the 7 days before it.
    contacts = (
        await session.execute(
            select(Conversation.external_user_id, Conversation.created_at)
            .where(
                Conversation.created_at >= f.start - REPEAT_WINDOW,
                Conversation.created_at < f.end,
                Conversation.external_user_id.is_not(None),
                *f.conversations(),
            )
            .order_by(Conversation.external_user_id, Conversation.created_at)
        )
    ).all()
    in_range = repeats = 0
    previous: tuple[str | None, datetime | None] = (None, None)
    for customer, started in contacts:
        if started >= f.start:
            in_range += 1
            last_customer, last_started = previous
            if (
                last_customer == customer
                and last_started is not None
                and started - last_started <= REPEAT_WINDOW
            ):
                repeats += 1
        previous = (customer, started)
    return {
        "conversations": conversations,
        "escalations": escalations,
        "escalation_rate": _ratio(escalations, conversations),
        "csat": _ratio(sum(1 for s in csat if s >= 4), len(csat)),
        "csat_mean": statistics.fmean(csat) if csat else None,
        "csat_responses": len(csat),
        "nps": 100 * (promoters - detractors) / len(nps) if nps else None,
        "nps_responses": len(nps),
        "conversion_rate": _ratio(conversions, conversations),
        "avg_resolution_seconds": statistics.fmean(durations) if durations else None,
        "median_resolution_seconds": statistics.median(durations) if durations else None,
        "repeat_contact_rate": _ratio(repeats, in_range),
        "_resolved": resolved,
    }


async def technical_numbers(session: AsyncSession, f: Filters) -> dict[str, Any]:
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(RequestStat.count), 0),
                func.coalesce(
                    func.sum(case((RequestStat.status_class == "5xx", RequestStat.count), else_=0)),
                    0,
                ),
            ).where(RequestStat.minute >= f.start, RequestStat.minute < f.end)
        )
    ).one()
    requests, errors = int(row[0]), int(row[1])
    error_rate = _ratio(errors, requests)
    return {
        "requests": requests,
        "error_rate": error_rate,
        "availability": None if error_rate is None else 1 - error_rate,
    }


async def summary(session: AsyncSession, f: Filters) -> dict[str, Any]:
    ai = await ai_numbers(session, f)
    business = await business_numbers(session, f)
    tokens, cost = ai.pop("_tokens"), ai.pop("_cost")
    resolved = business.pop("_resolved")
    ai["escalations"] = business.pop("escalations")
    ai["escalation_rate"] = business.pop("escalation_rate")
    return {
        "start": f.start,
        "end": f.end,
        "ai": ai,
        "business": business,
        "cost": {
            "tokens": tokens,
            "cost_usd": float(cost),
            "cost_per_conversation": (
                float(cost) / business["conversations"] if business["conversations"] else None
            ),
            "cost_per_resolved": float(cost) / resolved if resolved else None,
        },
        "technical": await technical_numbers(session, f),
    }


async def intents(session: AsyncSession, f: Filters) -> list[dict[str, Any]]:
    """Per detected intent, most frequent first: the "top intents and problems" table."""
    unknown = func.coalesce(ConversationMetrics.intent, "unknown")
    rows = (
        await session.execute(
            select(
                unknown.label("intent"),
                func.count().label("turns"),
                func.avg(ConversationMetrics.confidence).label("confidence"),
                func.sum(case((ConversationMetrics.escalated, 1), else_=0)).label("escalated"),
            )
            .where(*f.facts())
            .group_by(unknown)
        )
    ).all()
    total = sum(int(r.turns) for r in rows)
    in_range = [Message.created_at >= f.start, Message.created_at < f.end]
    detected = func.coalesce(Message.intent, "unknown")
    labels = {
        r[0]: (int(r[1]), int(r[2]))
        for r in (
            await session.execute(
                select(
                    detected,
                    func.count(),
                    func.sum(case((Message.intent == Message.labeled_intent, 1), else_=0)),
                )
                .join(Conversation, Conversation.id == Message.conversation_id)
                .where(Message.labeled_intent.is_not(None), *in_range, *f.conversations())
                .group_by(detected)
            )
        ).all()
    }
    ratings = {
        r[0]: (int(r[1]), int(r[2] or 0))
        for r in (
            await session.execute(
                select(detected, func.count(), func.sum(Feedback.score))
                .join(Message, Message.id == Feedback.message_id)
                .join(Conversation, Conversation.id == Feedback.conversation_id)
                .where(
                    Feedback.kind == FeedbackKind.rating,
                    Feedback.created_at >= f.start,
                    Feedback.created_at < f.end,
                    *f.conversations(),
                )
                .group_by(detected)
            )
        ).all()
    }
    result = []
    for row in sorted(rows, key=lambda r: (-int(r.turns), r.intent)):
        labeled, correct = labels.get(row.intent, (0, 0))
        rated, positive = ratings.get(row.intent, (0, 0))
        result.append(
            {
                "intent": row.intent,
                "turns": int(row.turns),
                "share": _ratio(int(row.turns), total),
                "avg_confidence": float(row.confidence) if row.confidence is not None else None,
                "escalation_rate": _ratio(int(row.escalated or 0), int(row.turns)),
                "labeled_turns": labeled,
                "accuracy": _ratio(correct, labeled),
                "positive_rating_ratio": _ratio(positive, rated),
            }
        )
    return result
