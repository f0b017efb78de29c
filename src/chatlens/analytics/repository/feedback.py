"""SQL for feedback, intent labels and the facts they fill in."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.models import (
    Conversation,
    ConversationMetrics,
    Feedback,
    FeedbackKind,
    Message,
)


async def get_message_for_user(
    session: AsyncSession, *, message_id: uuid.UUID, user_id: uuid.UUID | None
) -> tuple[Message, Conversation] | None:
    """A message and its conversation; `user_id` None (an admin) skips the owner check."""
    query = select(Message, Conversation).join(
        Conversation, Conversation.id == Message.conversation_id
    )
    query = query.where(Message.id == message_id)
    if user_id is not None:
        query = query.where(Conversation.user_id == user_id)
    row = (await session.execute(query)).first()
    return (row[0], row[1]) if row is not None else None


async def get_feedback(
    session: AsyncSession, *, conversation_id: uuid.UUID, kind: FeedbackKind, subject: str
) -> Feedback | None:
    return await session.scalar(
        select(Feedback).where(
            Feedback.conversation_id == conversation_id,
            Feedback.kind == kind,
            Feedback.subject == subject,
        )
    )


async def update_turn_facts(
    session: AsyncSession, conversation_id: uuid.UUID, **values: int | bool
) -> None:
    """Fill a conversation's CSAT or resolution into the fact rows of all its turns."""
    await session.execute(
        update(ConversationMetrics)
        .where(ConversationMetrics.conversation_id == conversation_id)
        .values(**values)
    )


def add(session: AsyncSession, row: Feedback) -> None:
    session.add(row)
