"""GET /api/analytics/summary: every number has one formula, written in docs/analytics.md."""

from __future__ import annotations

import statistics
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.analytics.filters import MAX_RANGE, Filters
from chatlens.analytics.repository import requests
from chatlens.analytics.repository import summary as repo
from chatlens.models import FeedbackKind

__all__ = ["MAX_RANGE", "Filters", "ai_numbers", "business_numbers", "intents", "summary"]

REPEAT_WINDOW = timedelta(days=7)


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


async def ai_numbers(session: AsyncSession, f: Filters) -> dict[str, Any]:
    turns = await repo.turn_totals(session, f)
    labeled = await repo.labeled_answers(session, f)
    ratings = await repo.answer_ratings(session, f)
    return {
        "turns": turns.turns,
        "avg_response_ms": turns.avg_response_ms,
        "p95_response_ms": turns.p95_response_ms,
        "avg_ttft_ms": turns.avg_ttft_ms,
        "labeled_turns": labeled.total,
        "intent_accuracy": _ratio(labeled.hits, labeled.total),
        "positive_rating_ratio": _ratio(ratings.hits, ratings.total),
        "_tokens": turns.tokens,
        "_cost": turns.cost_usd,
    }


async def business_numbers(session: AsyncSession, f: Filters) -> dict[str, Any]:
    totals = await repo.conversation_totals(session, f)
    conversations, escalations = totals.conversations, totals.escalations

    scores = await repo.survey_scores(session, f)
    csat = [s.score for s in scores if s.kind is FeedbackKind.csat]
    nps = [s.score for s in scores if s.kind is FeedbackKind.nps]
    promoters = sum(1 for s in nps if s >= 9)
    detractors = sum(1 for s in nps if s <= 6)

    resolved_rows = await repo.resolutions(session, f)
    durations = [(r.resolved_at - r.created_at).total_seconds() for r in resolved_rows]
    resolved = sum(1 for r in resolved_rows if r.outcome in ("resolved", "converted"))

    # Repeat contacts: each conversation of the range with a known customer, and whether
    # that customer had started another one in the 7 days before it.
    contacts = await repo.contacts(session, f, since=f.start - REPEAT_WINDOW)
    in_range = repeats = 0
    previous: repo.Contact | None = None
    for contact in contacts:
        if contact.started >= f.start:
            in_range += 1
            if (
                previous is not None
                and previous.customer == contact.customer
                and contact.started - previous.started <= REPEAT_WINDOW
            ):
                repeats += 1
        previous = contact
    return {
        "conversations": conversations,
        "escalations": escalations,
        "escalation_rate": _ratio(escalations, conversations),
        "csat": _ratio(sum(1 for s in csat if s >= 4), len(csat)),
        "csat_mean": statistics.fmean(csat) if csat else None,
        "csat_responses": len(csat),
        "nps": 100 * (promoters - detractors) / len(nps) if nps else None,
        "nps_responses": len(nps),
        "conversion_rate": _ratio(totals.conversions, conversations),
        "avg_resolution_seconds": statistics.fmean(durations) if durations else None,
        "median_resolution_seconds": statistics.median(durations) if durations else None,
        "repeat_contact_rate": _ratio(repeats, in_range),
        "_resolved": resolved,
    }


async def technical_numbers(session: AsyncSession, f: Filters) -> dict[str, Any]:
    # Requests are counted per route, not per project: the range alone applies.
    totals = await requests.totals(session, start=f.start, end=f.end)
    error_rate = _ratio(totals.errors, totals.count)
    return {
        "requests": totals.count,
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
    rows = await repo.intent_turns(session, f)
    total = sum(r.turns for r in rows)
    labels = await repo.intent_labels(session, f)
    ratings = await repo.intent_ratings(session, f)
    none = repo.Counted(total=0, hits=0)
    result = []
    for row in sorted(rows, key=lambda r: (-r.turns, r.intent)):
        labeled = labels.get(row.intent, none)
        rated = ratings.get(row.intent, none)
        result.append(
            {
                "intent": row.intent,
                "turns": row.turns,
                "share": _ratio(row.turns, total),
                "avg_confidence": row.avg_confidence,
                "escalation_rate": _ratio(row.escalated, row.turns),
                "labeled_turns": labeled.total,
                "accuracy": _ratio(labeled.hits, labeled.total),
                "positive_rating_ratio": _ratio(rated.hits, rated.total),
            }
        )
    return result
