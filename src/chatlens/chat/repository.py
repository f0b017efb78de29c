"""SQL for conversations, messages and the per-turn metrics rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.models import Conversation, ConversationMetrics, ConversationStatus, Message
from chatlens.pagination import Cursor


async def get_conversation(
    session: AsyncSession, *, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> Conversation | None:
    # Filtering by owner here makes another user's conversation indistinguishable from none.
    query = select(Conversation).where(
        Conversation.id == conversation_id, Conversation.user_id == user_id
    )
    return await session.scalar(query)


async def list_conversations(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    limit: int,
    after: Cursor | None,
    status: ConversationStatus | None,
    project_id: str | None,
) -> Sequence[Conversation]:
    """Newest first; one row more than `limit` tells the caller there is a next page."""
    query = select(Conversation).where(Conversation.user_id == user_id)
    if status is not None:
        query = query.where(Conversation.status == status)
    if project_id is not None:
        query = query.where(Conversation.project_id == project_id)
    if after is not None:
        query = query.where(
            or_(
                Conversation.created_at < after.created_at,
                and_(Conversation.created_at == after.created_at, Conversation.id < after.id),
            )
        )
    query = query.order_by(Conversation.created_at.desc(), Conversation.id.desc()).limit(limit + 1)
    return (await session.scalars(query)).all()


async def conversation_exists(session: AsyncSession, conversation_id: uuid.UUID) -> bool:
    query = select(Conversation.id).where(Conversation.id == conversation_id)
    return await session.scalar(query) is not None


async def delete_conversation(session: AsyncSession, conversation: Conversation) -> None:
    # Messages go with it (ON DELETE CASCADE); conversation_metrics rows stay as facts.
    await session.execute(delete(Conversation).where(Conversation.id == conversation.id))


async def list_messages(
    session: AsyncSession, *, conversation_id: uuid.UUID, limit: int, after: Cursor | None
) -> Sequence[Message]:
    """Oldest first; one row more than `limit` tells the caller there is a next page."""
    query = select(Message).where(Message.conversation_id == conversation_id)
    if after is not None:
        query = query.where(
            or_(
                Message.created_at > after.created_at,
                and_(Message.created_at == after.created_at, Message.id > after.id),
            )
        )
    query = query.order_by(Message.created_at, Message.id).limit(limit + 1)
    return (await session.scalars(query)).all()


async def recent_messages(
    session: AsyncSession, *, conversation_id: uuid.UUID, limit: int
) -> list[Message]:
    """The last `limit` messages in chronological order."""
    query = (
        select(Message)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    )
    rows = list((await session.scalars(query)).all())
    rows.reverse()
    return rows


async def add(session: AsyncSession, *rows: Conversation | Message | ConversationMetrics) -> None:
    """Insert now (the caller needs database defaults or constraint errors at once)."""
    session.add_all(rows)
    await session.flush()


def _table(model: type[Conversation | Message | ConversationMetrics]) -> Table:
    return cast(Table, model.__table__)


# The chat pipeline's statements, built once: a statement built per call costs its cache key
# on every call before SQLAlchemy finds the compiled form (benchmarks/README.md).
_INSERTS = {model: _table(model).insert() for model in (Conversation, Message, ConversationMetrics)}
_conversations = _table(Conversation)
_TOUCH = (
    _conversations.update()
    .where(_conversations.c.id == bindparam("conversation_id"))
    .values(updated_at=bindparam("at"))
)
_TOUCH_FIRST_RESPONSE = _TOUCH.values(
    first_response_at=func.coalesce(_conversations.c.first_response_at, bindparam("at"))
)


# The pipeline's writes as group-commit kinds (`chatlens.db.batch`): their statements in
# order, one row of parameters each. A new conversation with its first question:
NEW_CONVERSATION = (_INSERTS[Conversation], _INSERTS[Message])
# An answer: the conversation touched (`conversation_id`, `at`), the message, its metrics row.
ANSWER = (_TOUCH, _INSERTS[Message], _INSERTS[ConversationMetrics])
COMPLETE_ANSWER = (_TOUCH_FIRST_RESPONSE, _INSERTS[Message], _INSERTS[ConversationMetrics])


async def insert(
    session: AsyncSession,
    model: type[Conversation | Message | ConversationMetrics],
    values: dict[str, Any],
) -> None:
    """One row, as a plain INSERT: the chat pipeline's hot path skips the ORM's unit of work
    and what it adds to each of its two commits (the caller sets ids and timestamps)."""
    await session.execute(_INSERTS[model], values)


async def touch_conversation(
    session: AsyncSession, conversation_id: uuid.UUID, *, at: datetime, first_response: bool
) -> bool:
    """Mark a new answer (and the first one's time, once); False when the row is gone.

    One UPDATE, no SELECT first: the pipeline's own transaction, after ownership was
    checked on the request.
    """
    statement = _TOUCH_FIRST_RESPONSE if first_response else _TOUCH
    result = await session.execute(statement, {"conversation_id": conversation_id, "at": at})
    return _rowcount(result) == 1


async def escalate_conversation(
    session: AsyncSession, conversation_id: uuid.UUID, *, at: datetime, reason: str
) -> bool:
    """Escalate unless already escalated; True when this call escalated it."""
    statement = (
        update(Conversation)
        .where(
            Conversation.id == conversation_id,
            Conversation.status != ConversationStatus.escalated,
        )
        .values(
            status=ConversationStatus.escalated,
            escalated_at=at,
            escalation_reason=reason,
            escalation_note=None,  # the bot's own escalation has a coded reason only
        )
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    return _rowcount(result) == 1


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount


async def delete_message(session: AsyncSession, message_id: uuid.UUID) -> None:
    await session.execute(delete(Message).where(Message.id == message_id))


async def count_updated_since(session: AsyncSession, *, since: datetime) -> int:
    query = select(func.count()).select_from(Conversation).where(Conversation.updated_at >= since)
    return await session.scalar(query) or 0
