"""Feedback, CSAT/NPS and intent labels: the support lead's inputs."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.analytics.repository import feedback as repo
from chatlens.auth.service import Principal
from chatlens.chat.conversations import get_conversation_or_raise
from chatlens.db.base import utcnow
from chatlens.errors import NotFound, ValidationFailed
from chatlens.inference.intents import UNKNOWN_INTENT
from chatlens.models import (
    Conversation,
    Feedback,
    FeedbackKind,
    Message,
    MessageRole,
)
from chatlens.observability.metrics import Metrics

log = structlog.get_logger(__name__)


class CriticalWords:
    """Whole words, any case, any script: "суд" flags "в суд", not "судно"."""

    def __init__(self, words: Iterable[str]) -> None:
        ordered = sorted({w.casefold() for w in words if w}, key=len, reverse=True)
        alternatives = "|".join(re.escape(w) for w in ordered)
        self._pattern = (
            re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE) if ordered else None
        )

    def found_in(self, text: str | None) -> bool:
        return bool(text and self._pattern is not None and self._pattern.search(text))


@dataclass(frozen=True)
class Saved:
    feedback: Feedback
    created: bool  # False: it replaced an earlier one


@dataclass(frozen=True)
class Labeled:
    message: Message
    labeled_intent: str
    correct: bool | None  # None: the answer had no detected intent to judge


@dataclass(frozen=True)
class FeedbackContext:
    """What recording feedback needs besides the request."""

    critical: CriticalWords
    metrics: Metrics | None


async def rate_message(
    session: AsyncSession,
    ctx: FeedbackContext,
    *,
    user: Principal,
    message_id: uuid.UUID,
    up: bool,
    comment: str | None,
) -> Saved:
    found = await repo.get_message_for_user(session, message_id=message_id, user_id=user.user_id)
    if found is None:
        raise NotFound("message not found")
    message, conversation = found
    if message.role is not MessageRole.assistant:
        raise ValidationFailed("only the bot's answers can be rated")
    saved = await _save(
        session,
        ctx,
        conversation=conversation,
        kind=FeedbackKind.rating,
        score=1 if up else 0,
        comment=comment,
        message=message,
    )
    if ctx.metrics is not None:
        ctx.metrics.feedback.labels("rating", "up" if up else "down").inc()
    return saved


async def rate_conversation(
    session: AsyncSession,
    ctx: FeedbackContext,
    *,
    user: Principal,
    conversation_id: uuid.UUID,
    kind: FeedbackKind,
    score: int,
    comment: str | None,
) -> Saved:
    """CSAT (1-5) or NPS (0-10): one of each per conversation; a second replaces the first."""
    conversation = await get_conversation_or_raise(
        session, user=user, conversation_id=conversation_id
    )
    saved = await _save(
        session, ctx, conversation=conversation, kind=kind, score=score, comment=comment
    )
    if ctx.metrics is not None:
        ctx.metrics.feedback.labels(kind.value, str(score)).inc()
        scores = (
            ctx.metrics.satisfaction_score if kind is FeedbackKind.csat else ctx.metrics.nps_score
        )
        scores.observe(score)
    return saved


async def _save(
    session: AsyncSession,
    ctx: FeedbackContext,
    *,
    conversation: Conversation,
    kind: FeedbackKind,
    score: int,
    comment: str | None,
    message: Message | None = None,
) -> Saved:
    subject = str(message.id) if message is not None else ""
    trace_id = message.trace_id if message is not None else None
    critical = ctx.critical.found_in(comment)
    now = utcnow()
    row = await repo.get_feedback(
        session, conversation_id=conversation.id, kind=kind, subject=subject
    )
    created = row is None
    if row is None:
        row = Feedback(
            id=uuid.uuid4(),
            conversation_id=conversation.id,
            message_id=message.id if message is not None else None,
            subject=subject,
            kind=kind,
            created_at=now,
            score=score,
        )
        repo.add(session, row)
    row.score, row.comment, row.critical, row.trace_id = score, comment, critical, trace_id
    row.updated_at = now
    if kind is FeedbackKind.csat:
        # The export's per-turn rows carry their conversation's latest CSAT.
        await repo.update_turn_facts(session, conversation.id, satisfaction_score=score)
    await session.commit()
    fields = {
        "kind": kind.value,
        "score": score,
        "conversation_id": str(conversation.id),
        "message_id": str(message.id) if message is not None else None,
        "rated_trace_id": trace_id,
        "replaced": not created,
    }
    log.info("feedback_received", **fields)
    if critical:
        # The comment itself stays out of the log: it is the customer's own words.
        log.warning("critical_feedback", **fields)
        if ctx.metrics is not None:
            ctx.metrics.negative_feedback.labels(kind.value).inc()
    return Saved(feedback=row, created=created)


async def label_intent(
    session: AsyncSession,
    metrics: Metrics | None,
    *,
    admin: Principal,
    message_id: uuid.UUID,
    intent: str,
    valid: Iterable[str],
) -> Labeled:
    """An operator's label of an answer's true intent (admins, any user's conversation)."""
    names = sorted({*valid, UNKNOWN_INTENT})
    if intent not in names:
        raise ValidationFailed(f"intent: unknown intent {intent!r}; valid: {', '.join(names)}")
    found = await repo.get_message_for_user(session, message_id=message_id, user_id=None)
    if found is None:
        raise NotFound("message not found")
    message, _ = found
    if message.role is not MessageRole.assistant:
        raise ValidationFailed("intents are labeled on the bot's answers")
    message.labeled_intent = intent
    message.labeled_by = admin.user_id
    message.labeled_at = utcnow()
    await session.commit()
    log.info(
        "intent_labeled",
        message_id=str(message.id),
        detected=message.intent,
        labeled=intent,
        admin_user_id=str(admin.user_id),
    )
    if metrics is not None:
        detected = message.intent or UNKNOWN_INTENT
        metrics.intent_labels.labels(detected, "true" if detected == intent else "false").inc()
    correct = None if message.intent is None else message.intent == intent
    return Labeled(message=message, labeled_intent=intent, correct=correct)
