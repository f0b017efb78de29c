"""SQL for conversations, messages and the per-turn metrics rows; `TurnWriter` writes a turn's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chatlens.db.batch import GroupCommit
from chatlens.errors import NotFound
from chatlens.models import (
    Conversation,
    ConversationMetrics,
    ConversationStatus,
    Message,
    MessageRole,
    MessageStatus,
)
from chatlens.observability.metrics import Histogram
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


async def mark_turns_resolved(
    session: AsyncSession, conversation_id: uuid.UUID, *, resolved: bool
) -> None:
    """A conversation's resolution, into the metrics rows of all its turns."""
    await session.execute(
        update(ConversationMetrics)
        .where(ConversationMetrics.conversation_id == conversation_id)
        .values(resolved=resolved)
    )


# -- a turn's rows -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewConversation:
    """A conversation opened by its first question (stored with it, in one transaction)."""

    id: uuid.UUID
    user_id: uuid.UUID
    project_id: str
    platform: str
    external_user_id: str | None
    title: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class QuestionRow:
    """A customer's message, stored before the model sees it."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    project_id: str
    content: str
    created_at: datetime
    prompt_tokens: int
    trace_id: str | None
    span_id: str | None


@dataclass(frozen=True, slots=True)
class AnswerRow:
    """An answer: its message and its turn's `conversation_metrics` row, stored together."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    project_id: str
    platform: str
    external_user_id: str | None
    content: str
    created_at: datetime
    trace_id: str | None
    span_id: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    inference_time_ms: float
    ttft_ms: float | None
    intent: str | None
    confidence: float | None
    cost_usd: Decimal
    status: MessageStatus
    # The bot's coded escalation reason, when this answer hands the conversation over.
    escalation: str | None = None
    # Regenerate: the answer this one replaces.
    replaces: uuid.UUID | None = None


def _conversation_values(row: NewConversation) -> dict[str, Any]:
    return {
        "id": row.id,
        "user_id": row.user_id,
        "project_id": row.project_id,
        "platform": row.platform,
        "external_user_id": row.external_user_id,
        "title": row.title,
        "status": ConversationStatus.open,
        "created_at": row.created_at,
        "updated_at": row.created_at,
    }


def _message_values(
    row: QuestionRow | AnswerRow, role: MessageRole, status: MessageStatus
) -> dict[str, Any]:
    """The columns a question and an answer share."""
    return {
        "id": row.id,
        "conversation_id": row.conversation_id,
        "role": role,
        "content": row.content,
        "created_at": row.created_at,
        "project_id": row.project_id,
        "prompt_tokens": row.prompt_tokens,
        "status": status,
        "trace_id": row.trace_id,
        "span_id": row.span_id,
    }


def _question_values(row: QuestionRow) -> dict[str, Any]:
    return _message_values(row, MessageRole.user, MessageStatus.complete)


def _answer_values(row: AnswerRow) -> dict[str, Any]:
    values = _message_values(row, MessageRole.assistant, row.status)
    values.update(
        model=row.model,
        completion_tokens=row.completion_tokens,
        inference_time_ms=row.inference_time_ms,
        ttft_ms=row.ttft_ms,
        intent=row.intent,
        confidence=row.confidence,
        cost_usd=row.cost_usd,
    )
    return values


def _turn_values(row: AnswerRow, turn_id: uuid.UUID) -> dict[str, Any]:
    return {
        "id": turn_id,
        "timestamp": row.created_at,
        "conversation_id": row.conversation_id,
        "message_id": row.id,
        "user_id": row.user_id,
        "project_id": row.project_id,
        "platform": row.platform,
        "external_user_id": row.external_user_id,
        "model": row.model,
        "intent": row.intent,
        "confidence": row.confidence,
        "response_time_ms": row.inference_time_ms,
        "ttft_ms": row.ttft_ms,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "tokens_used": row.prompt_tokens + row.completion_tokens,
        "cost_usd": row.cost_usd,
        "resolved": False,
        "escalated": row.escalation is not None,
        "status": row.status.value,
    }


class TurnWriter:
    """Writes the rows of turns: questions of new conversations and plain answers through the
    group commit (committed in groups under load), the rest in a transaction of their own."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, sizes: Histogram | None = None
    ) -> None:
        self.sessionmaker = sessionmaker
        engine: AsyncEngine = sessionmaker.kw["bind"]
        self.group = GroupCommit(engine, sizes=sizes)

    async def aclose(self) -> None:
        """Let queued writes commit (at shutdown, before the engine goes)."""
        await self.group.aclose()

    async def open_conversation(
        self,
        conversation: NewConversation,
        question: QuestionRow,
        *,
        committed: Callable[[], object] | None = None,
    ) -> None:
        """A new conversation and its first question, committed when this returns;
        `committed` runs once they are, also when the caller stopped waiting."""
        await self.group.write(
            NEW_CONVERSATION,
            (_conversation_values(conversation), _question_values(question)),
            committed=committed,
        )

    async def add_question(self, session: AsyncSession, question: QuestionRow) -> None:
        """A question in a conversation that goes on, in the caller's transaction."""
        await session.execute(_INSERTS[Message], _question_values(question))

    def write_answer(self, answer: AnswerRow) -> asyncio.Future[Any]:
        """Start storing an answer with its turn's row; the future's result is True when the
        answer escalated the conversation. The write is never cancelled with a caller that
        stops waiting (await it shielded): a write that commits late is not lost."""
        if answer.escalation is None and answer.replaces is None:
            touch = {"conversation_id": answer.conversation_id, "at": answer.created_at}
            kind = COMPLETE_ANSWER if answer.status is MessageStatus.complete else ANSWER
            return self.group.submit(
                kind, (touch, _answer_values(answer), _turn_values(answer, uuid.uuid4()))
            )
        return asyncio.ensure_future(self._write_in_session(answer))

    async def _write_in_session(self, answer: AnswerRow) -> bool:
        """An escalation's or a regenerated answer's rows, in a transaction of their own."""
        newly_escalated = False
        async with self.sessionmaker() as session, session.begin():
            touched = await touch_conversation(
                session,
                answer.conversation_id,
                at=answer.created_at,
                first_response=answer.status is MessageStatus.complete,
            )
            if not touched:
                raise NotFound("conversation not found")
            if answer.escalation is not None:
                newly_escalated = await escalate_conversation(
                    session, answer.conversation_id, at=answer.created_at, reason=answer.escalation
                )
            if answer.replaces is not None:
                await delete_message(session, answer.replaces)
            await session.execute(_INSERTS[Message], _answer_values(answer))
            await session.execute(_INSERTS[ConversationMetrics], _turn_values(answer, uuid.uuid4()))
        return newly_escalated

    async def explain(self, error: IntegrityError, conversation_id: uuid.UUID) -> Exception:
        """What an answer's failed write means to the client: a conversation deleted while the
        model was answering (its foreign key said so) is not found; anything else is itself."""
        async with self.sessionmaker() as session:
            if await conversation_exists(session, conversation_id):
                return error
        return NotFound("conversation not found")
