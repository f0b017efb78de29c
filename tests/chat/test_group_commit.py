"""The group commit: concurrent turns share transactions, and each keeps its own outcome."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from chatlens.auth.service import Principal
from chatlens.chat import repository as repo
from chatlens.db.base import utcnow
from chatlens.db.batch import GroupCommit
from chatlens.errors import NotFound
from chatlens.models import Conversation, ConversationMetrics, Message, MessageRole
from chatlens.observability.metrics import Metrics

pytestmark = pytest.mark.asyncio


def _new_conversation(user_id: uuid.UUID, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    now = utcnow()
    conversation_id = uuid.uuid4()
    conversation = {
        "id": conversation_id,
        "user_id": user_id,
        "project_id": "default",
        "platform": "web",
        "external_user_id": None,
        "title": text,
        "status": "open",
        "created_at": now,
        "updated_at": now,
    }
    question = {
        "id": uuid.uuid4(),
        "conversation_id": conversation_id,
        "role": MessageRole.user,
        "content": text,
        "created_at": now,
        "project_id": "default",
        "prompt_tokens": 1,
        "status": "complete",
        "trace_id": None,
        "span_id": None,
    }
    return conversation, question


async def _count(maker: async_sessionmaker[AsyncSession], model: Any, **where: Any) -> int:
    async with maker() as session:
        query = select(func.count()).select_from(model).filter_by(**where)
        return int(await session.scalar(query) or 0)


async def test_concurrent_turns_share_transactions_and_all_are_stored(
    client: httpx.AsyncClient, account: Any, app: Any, sessionmaker: Any
) -> None:
    metrics: Metrics = app.state.metrics
    histogram = metrics.db_commit_writes
    before_writes, before_commits = histogram._sum.get(), _observations(histogram)
    questions = [f"where is my order number {i}" for i in range(12)]
    responses = await asyncio.gather(
        *(client.post("/chat", json={"message": q}, headers=account.headers) for q in questions)
    )
    assert [r.status_code for r in responses] == [200] * 12
    # Two writes a turn (question, answer), in fewer transactions than writes.
    assert histogram._sum.get() - before_writes == 24
    assert _observations(histogram) - before_commits < 24
    for question, response in zip(questions, responses, strict=True):
        body = response.json()
        conversation_id = uuid.UUID(body["conversation_id"])
        assert await _count(sessionmaker, Conversation, id=conversation_id) == 1
        assert await _count(sessionmaker, Message, conversation_id=conversation_id) == 2
        async with sessionmaker() as session:
            stored = await session.scalar(
                select(Message).where(
                    Message.conversation_id == conversation_id,
                    Message.role == MessageRole.assistant,
                )
            )
            asked = await session.scalar(
                select(Message.content).where(
                    Message.conversation_id == conversation_id, Message.role == MessageRole.user
                )
            )
            conversation = await session.get(Conversation, conversation_id)
        assert asked == question
        assert stored is not None and stored.id == uuid.UUID(body["message_id"])
        assert stored.content == body["reply"]
        assert conversation is not None and conversation.first_response_at is not None
        assert await _count(sessionmaker, ConversationMetrics, message_id=stored.id) == 1


def _observations(histogram: Any) -> float:
    return sum(bucket.get() for bucket in histogram._buckets)


async def test_a_failing_write_fails_only_its_own_caller(
    app: Any, account: Any, sessionmaker: Any
) -> None:
    metrics = Metrics()
    writes = GroupCommit(app.state.engine, sizes=metrics.db_commit_writes)
    good = [_new_conversation(account.id, f"question {i}") for i in range(4)]
    bad = _new_conversation(uuid.uuid4(), "from a user who does not exist")
    with capture_logs() as logs:
        results = await asyncio.gather(
            *(writes.write(repo.NEW_CONVERSATION, rows) for rows in [*good[:2], bad, *good[2:]]),
            return_exceptions=True,
        )
    # They went in one transaction, which failed; then each was tried alone, and the four
    # good ones were committed.
    [failed] = [line for line in logs if line["event"] == "write_batch_failed"]
    assert failed["writes"] == 5 and failed["error_type"] == "IntegrityError"
    assert _observations(metrics.db_commit_writes) == 4
    assert metrics.db_commit_writes._sum.get() == 4
    assert [type(r) for r in results] == [type(None)] * 2 + [IntegrityError] + [type(None)] * 2
    for conversation, question in good:
        assert await _count(sessionmaker, Conversation, id=conversation["id"]) == 1
        assert await _count(sessionmaker, Message, id=question["id"]) == 1
    assert await _count(sessionmaker, Conversation, id=bad[0]["id"]) == 0
    assert await _count(sessionmaker, Message, id=bad[1]["id"]) == 0


async def test_a_cancelled_caller_still_gets_its_write(
    app: Any, account: Any, sessionmaker: Any
) -> None:
    writes = GroupCommit(app.state.engine)
    conversation, question = _new_conversation(account.id, "the client went away")
    caller = asyncio.create_task(writes.write(repo.NEW_CONVERSATION, (conversation, question)))
    await asyncio.sleep(0)  # queued
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await writes.aclose()
    assert await _count(sessionmaker, Message, id=question["id"]) == 1


async def test_an_answer_to_a_deleted_conversation_is_not_found(
    app: Any, account: Any, sessionmaker: Any
) -> None:
    pipeline = app.state.pipeline
    user = Principal(user_id=account.id, name=account.name, is_admin=False)
    async with sessionmaker() as session:
        turn = await pipeline.start_turn(
            session, user=user, text="where is my order", conversation_id=None
        )
    answer = pipeline.answer(turn)
    [_ async for _ in answer.deltas()]
    async with sessionmaker() as session, session.begin():
        conversation = await session.get(Conversation, turn.conversation_id)
        await session.delete(conversation)
    with pytest.raises(NotFound):
        await answer.save()
    gone = turn.conversation_id
    assert await _count(sessionmaker, Message, conversation_id=gone) == 0
    assert await _count(sessionmaker, ConversationMetrics, conversation_id=gone) == 0
