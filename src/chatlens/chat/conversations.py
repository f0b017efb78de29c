"""Conversations: create, read, rename, delete, and their lifecycle (escalate, resolve)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatlens.auth.service import Principal
from chatlens.chat import repository as repo
from chatlens.db.base import utcnow
from chatlens.errors import Conflict, NotFound
from chatlens.models import Conversation, ConversationStatus, Message
from chatlens.observability.metrics import Metrics
from chatlens.pagination import Cursor, Slice

log = structlog.get_logger(__name__)

TITLE_LENGTH = 60


def make_title(text: str) -> str:
    """The first ~60 characters of a message, cut at a word."""
    words = " ".join(text.split())
    if len(words) <= TITLE_LENGTH:
        return words
    cut = words[: TITLE_LENGTH + 1].rsplit(" ", 1)[0] if " " in words[:TITLE_LENGTH] else ""
    return (cut or words[:TITLE_LENGTH]).rstrip(" ,.;:-") + "…"


def opened(
    metrics: Metrics | None, *, conversation_id: uuid.UUID, project_id: str, platform: str
) -> None:
    """Log and count a conversation once it is committed (however it was started)."""
    log.info(
        "conversation_created",
        conversation_id=str(conversation_id),
        project_id=project_id,
        platform=platform,
    )
    if metrics is not None:
        metrics.conversations.labels(project_id, platform).inc()


async def get_conversation_or_raise(
    session: AsyncSession, *, user: Principal, conversation_id: uuid.UUID
) -> Conversation:
    conversation = await repo.get_conversation(
        session, user_id=user.user_id, conversation_id=conversation_id
    )
    if conversation is None:
        raise NotFound("conversation not found")
    return conversation


async def create_conversation(
    session: AsyncSession,
    *,
    user: Principal,
    project_id: str,
    platform: str,
    external_user_id: str | None,
    title: str | None = None,
    metrics: Metrics | None = None,
) -> Conversation:
    conversation = Conversation(
        user_id=user.user_id,
        project_id=project_id,
        platform=platform,
        external_user_id=external_user_id,
        title=title,
    )
    await repo.add(session, conversation)
    await session.commit()
    opened(metrics, conversation_id=conversation.id, project_id=project_id, platform=platform)
    return conversation


async def list_conversations(
    session: AsyncSession,
    *,
    user: Principal,
    limit: int,
    cursor: Cursor | None,
    status: ConversationStatus | None,
    project_id: str | None,
) -> Slice[Conversation]:
    rows = await repo.list_conversations(
        session,
        user_id=user.user_id,
        limit=limit,
        after=cursor,
        status=status,
        project_id=project_id,
    )
    return Slice.of(rows, limit)


async def update_conversation(
    session: AsyncSession, *, user: Principal, conversation_id: uuid.UUID, title: str
) -> Conversation:
    conversation = await get_conversation_or_raise(
        session, user=user, conversation_id=conversation_id
    )
    conversation.title = title.strip()
    conversation.updated_at = utcnow()
    await session.flush()
    return conversation


async def delete_conversation(
    session: AsyncSession, *, user: Principal, conversation_id: uuid.UUID
) -> None:
    conversation = await get_conversation_or_raise(
        session, user=user, conversation_id=conversation_id
    )
    await repo.delete_conversation(session, conversation)
    log.info("conversation_deleted", conversation_id=str(conversation_id))


async def list_messages(
    session: AsyncSession,
    *,
    user: Principal,
    conversation_id: uuid.UUID,
    limit: int,
    cursor: Cursor | None,
) -> Slice[Message]:
    await get_conversation_or_raise(session, user=user, conversation_id=conversation_id)
    rows = await repo.list_messages(
        session, conversation_id=conversation_id, limit=limit, after=cursor
    )
    return Slice.of(rows, limit)


async def count_active_conversations(
    sessionmaker: async_sessionmaker[AsyncSession], *, window_s: int
) -> int:
    """Conversations with a message in the last `window_s` seconds."""
    async with sessionmaker() as session:
        return await repo.count_updated_since(session, since=utcnow() - timedelta(seconds=window_s))


# -- the lifecycle -------------------------------------------------------------------------


async def escalate(
    session: AsyncSession,
    metrics: Metrics | None,
    *,
    user: Principal,
    conversation_id: uuid.UUID,
    reason: str,
    note: str | None = None,
) -> Conversation:
    """open → escalated, with a coded reason and an optional note for the operator; else 409.

    The bot's own escalation (an answer that hands over) is written with its answer
    (`repository.TurnWriter`)."""
    conversation = await get_conversation_or_raise(
        session, user=user, conversation_id=conversation_id
    )
    if conversation.status is not ConversationStatus.open:
        raise Conflict(f"a {conversation.status.value} conversation cannot be escalated")
    now = utcnow()
    conversation.status = ConversationStatus.escalated
    conversation.escalated_at = now
    conversation.escalation_reason = reason
    # This escalation's note, or none: never an earlier escalation's beside a new reason.
    conversation.escalation_note = note or None
    conversation.updated_at = now
    await session.commit()
    if metrics is not None:
        metrics.escalations.labels(conversation.platform, reason).inc()
    # The note is the caller's own words (a customer's, often): only its length is logged.
    log.info(
        "conversation_escalated",
        conversation_id=str(conversation.id),
        reason=reason,
        note_chars=len(conversation.escalation_note or ""),
    )
    return conversation


async def resolve(
    session: AsyncSession,
    metrics: Metrics | None,
    *,
    user: Principal,
    conversation_id: uuid.UUID,
    outcome: str,
) -> Conversation:
    """open or escalated → resolved (outcome resolved, converted or abandoned); else 409."""
    conversation = await get_conversation_or_raise(
        session, user=user, conversation_id=conversation_id
    )
    if conversation.status is ConversationStatus.resolved:
        raise Conflict("the conversation is already resolved")
    now = utcnow()
    conversation.status = ConversationStatus.resolved
    conversation.outcome = outcome
    conversation.resolved_at = now
    conversation.updated_at = now
    # Resolved for the export's per-turn rows: closed with the customer helped.
    await repo.mark_turns_resolved(session, conversation.id, resolved=outcome != "abandoned")
    await session.commit()
    seconds = max(0.0, (now - conversation.created_at).total_seconds())
    if metrics is not None:
        metrics.conversations_resolved.labels(outcome, conversation.platform).inc()
        metrics.conversation_resolution.observe(seconds)
    log.info(
        "conversation_resolved",
        conversation_id=str(conversation.id),
        outcome=outcome,
        resolution_seconds=round(seconds, 3),
    )
    return conversation
