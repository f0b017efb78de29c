"""The group commit: concurrent turns share transactions, and each keeps its own outcome."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, Engine, bindparam, event, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chatlens import state
from chatlens.auth.service import Principal
from chatlens.chat import answer as answers
from chatlens.chat import repository as repo
from chatlens.chat.pipeline import ChatPipeline
from chatlens.chat.turn import InferenceFailed
from chatlens.db.batch import DRAIN_TASK_NAME, GroupCommit
from chatlens.db.engine import create_engine
from chatlens.db.session import Database
from chatlens.errors import NotFound
from chatlens.models import Conversation, ConversationMetrics, Message, MessageRole
from chatlens.observability.deps import Telemetry
from chatlens.observability.metrics import Metrics
from tests.helpers import conversation_rows

pytestmark = pytest.mark.asyncio

# Nothing here may hang the suite: every wait is bounded.
WAIT_S = 20


@pytest.fixture
def one_drain(app: Any, monkeypatch: pytest.MonkeyPatch) -> GroupCommit:
    """The pipeline's group commit with one drain, as on SQLite, on either database: on
    PostgreSQL writes are grouped only once all its drains (one per pooled connection) are
    busy, which a test cannot arrange reliably."""
    metrics: Metrics = state.of(app).get(Telemetry).metrics
    writes = GroupCommit(
        state.of(app).get(Database).engine, sizes=metrics.db_commit_writes, drains=1
    )
    monkeypatch.setattr(state.of(app).get(ChatPipeline).answering.writer, "group", writes)
    return writes


@pytest.fixture
async def other_engine(settings: Any) -> Any:
    """A second engine on the test database: another process's connection."""
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture
def transactions(other_engine: AsyncEngine) -> Iterator[list[bool]]:
    """One entry per transaction begun on `other_engine`: on PostgreSQL by the engine itself;
    on SQLite by the synchronous engines a group commit runs on its writer thread (the
    only synchronous SQLite engines while a test runs)."""
    begun: list[bool] = []

    def counted(connection: Connection) -> None:
        engine = connection.engine
        if engine is other_engine.sync_engine or engine.url.drivername == "sqlite":
            begun.append(True)

    event.listen(Engine, "begin", counted)
    yield begun
    event.remove(Engine, "begin", counted)


async def _count(maker: async_sessionmaker[AsyncSession], model: Any, **where: Any) -> int:
    async with maker() as session:
        query = select(func.count()).select_from(model).filter_by(**where)
        return int(await session.scalar(query) or 0)


async def test_concurrent_turns_share_transactions_and_all_are_stored(
    client: httpx.AsyncClient, account: Any, app: Any, sessionmaker: Any, one_drain: Any
) -> None:
    metrics: Metrics = state.of(app).get(Telemetry).metrics
    before_writes, before_commits = _written(metrics), _observations(metrics)
    questions = [f"where is my order number {i}" for i in range(12)]
    responses = await asyncio.wait_for(
        asyncio.gather(
            *(client.post("/chat", json={"message": q}, headers=account.headers) for q in questions)
        ),
        WAIT_S,
    )
    assert [r.status_code for r in responses] == [200] * 12
    # Two writes a turn (question, answer), in fewer transactions than writes.
    assert _written(metrics) - before_writes == 24
    assert _observations(metrics) - before_commits < 24
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


async def _answer_ids(sessionmaker: Any, conversation_id: uuid.UUID) -> list[uuid.UUID]:
    async with sessionmaker() as session:
        query = select(Message.id).where(
            Message.conversation_id == conversation_id, Message.role == MessageRole.assistant
        )
        return list((await session.scalars(query)).all())


def _counted(app: Any, name: str) -> float:
    """A counter's total over all its labels (`name` without `_total`)."""
    return sum(
        sample.value
        for metric in state.of(app).get(Telemetry).metrics.registry.collect()
        if metric.name == name
        for sample in metric.samples
        if sample.name == f"{name}_total"
    )


def _answers_counted(app: Any) -> float:
    return _counted(app, "messages")


def _observations(metrics: Metrics) -> float:
    """Transactions the group commit committed."""
    return metrics.registry.get_sample_value("db_commit_writes_count") or 0.0


def _written(metrics: Metrics) -> float:
    """Writes the group commit committed, all transactions together."""
    return metrics.registry.get_sample_value("db_commit_writes_sum") or 0.0


async def test_a_failing_write_fails_only_its_own_caller(
    account: Any, sessionmaker: Any, other_engine: AsyncEngine, transactions: list[bool]
) -> None:
    metrics = Metrics()
    writes = GroupCommit(other_engine, sizes=metrics.db_commit_writes, drains=1)
    good = [conversation_rows(account.id, f"question {i}") for i in range(4)]
    bad = conversation_rows(uuid.uuid4(), "from a user who does not exist")
    results = await asyncio.wait_for(
        asyncio.gather(
            *(writes.write(repo.NEW_CONVERSATION, rows) for rows in [*good[:2], bad, *good[2:]]),
            return_exceptions=True,
        ),
        WAIT_S,
    )
    # They went in one transaction, which failed; then each was tried alone (six
    # transactions in all), and the four good ones were committed.
    assert len(transactions) == 6
    assert _observations(metrics) == 4
    assert _written(metrics) == 4
    assert [type(r) for r in results] == [type(None)] * 2 + [IntegrityError] + [type(None)] * 2
    for conversation, question in good:
        assert await _count(sessionmaker, Conversation, id=conversation["id"]) == 1
        assert await _count(sessionmaker, Message, id=question["id"]) == 1
    assert await _count(sessionmaker, Conversation, id=bad[0]["id"]) == 0
    assert await _count(sessionmaker, Message, id=bad[1]["id"]) == 0


async def test_a_cancelled_caller_still_gets_its_write(
    account: Any, sessionmaker: Any, other_engine: AsyncEngine
) -> None:
    writes = GroupCommit(other_engine)
    conversation, question = conversation_rows(account.id, "the client went away")
    caller = asyncio.create_task(writes.write(repo.NEW_CONVERSATION, (conversation, question)))
    await asyncio.sleep(0)  # queued
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(writes.aclose(), WAIT_S)
    assert await _count(sessionmaker, Message, id=question["id"]) == 1


# A write of the tests' own: one statement, retitling a conversation.
RETITLE = (
    update(Conversation)
    .where(Conversation.id == bindparam("conversation_id"))
    .values(title=bindparam("new_title")),
)


async def test_a_write_whose_drain_is_cancelled_is_told_how_its_transaction_ended(
    app: Any, account: Any, sessionmaker: Any, other_engine: AsyncEngine
) -> None:
    writes = GroupCommit(other_engine, drains=1)
    conversation, question = conversation_rows(account.id, "before")
    await asyncio.wait_for(writes.write(repo.NEW_CONVERSATION, (conversation, question)), WAIT_S)
    async with _row_held(state.of(app).get(Database).engine, conversation["id"]):
        with _executing("UPDATE conversations SET title") as retitling:
            written = writes.submit(
                RETITLE, ({"conversation_id": conversation["id"], "new_title": "after"},)
            )
            await _started(retitling)  # its transaction is under way, waiting for the row
        (drain,) = [t for t in asyncio.all_tasks() if t.get_name() == DRAIN_TASK_NAME]
        drain.cancel()  # as at a shutdown that cancels every task
        await asyncio.wait([drain], timeout=WAIT_S)
        assert drain.done()
        # The transaction goes on (SQLite's thread cannot stop it): not "cancelled" yet.
        assert not written.done()
    await asyncio.wait_for(written, WAIT_S)  # committed, and told so
    async with sessionmaker() as session:
        stored = await session.get(Conversation, conversation["id"])
    assert stored is not None and stored.title == "after"


async def test_a_conversation_whose_caller_went_away_is_created_and_counted(
    app: Any,
    account: Any,
    sessionmaker: Any,
    other_engine: AsyncEngine,
    one_drain: GroupCommit,
) -> None:
    pipeline = state.of(app).get(ChatPipeline)
    user = Principal(user_id=account.id, name=account.name, is_admin=False)
    held, question = conversation_rows(account.id, "held")
    await asyncio.wait_for(one_drain.write(repo.NEW_CONVERSATION, (held, question)), WAIT_S)
    before = _counted(app, "conversations")

    async def start() -> None:
        async with sessionmaker() as session:
            await pipeline.start_turn(
                session, user=user, text="the client went away", conversation_id=None
            )

    async with _row_held(other_engine, held["id"]):
        # The one drain is busy, waiting for the held row; the new question queues behind.
        with _executing("UPDATE conversations SET title") as retitling:
            busy = one_drain.submit(RETITLE, ({"conversation_id": held["id"], "new_title": "x"},))
            await _started(retitling)
        caller = asyncio.create_task(start())
        await _queued(one_drain, 1)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert _counted(app, "conversations") == before
    await asyncio.wait_for(busy, WAIT_S)
    await asyncio.wait_for(one_drain.aclose(), WAIT_S)
    # Committed anyway, and counted (and logged) when it was.
    assert await _count(sessionmaker, Conversation, title="the client went away") == 1
    assert _counted(app, "conversations") == before + 1


async def test_an_answer_to_a_deleted_conversation_is_not_found(
    app: Any, account: Any, sessionmaker: Any
) -> None:
    pipeline = state.of(app).get(ChatPipeline)
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


@contextmanager
def _executing(text: str, *, about: object = None) -> Iterator[threading.Event]:
    """Set once a statement containing `text` (and `about` among its parameters) starts, on
    any engine and any thread: SQLite's writer thread, PostgreSQL's connections."""
    started = threading.Event()

    def seen(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if text in statement and (about is None or str(about) in repr(parameters)):
            started.set()

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield started
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


async def _started(started: threading.Event) -> None:
    """Wait (bounded) until the statement `started` watches is under way."""
    assert await asyncio.to_thread(started.wait, WAIT_S), "the statement never started"


async def _queued(writes: GroupCommit, count: int) -> None:
    """Wait (bounded) until `count` writes wait in the group commit's queue."""
    async with asyncio.timeout(WAIT_S):
        while writes.queued < count:  # noqa: ASYNC110  (the queue has no event to wait on)
            await asyncio.sleep(0)


@asynccontextmanager
async def _row_held(engine: AsyncEngine, conversation_id: uuid.UUID) -> AsyncIterator[None]:
    """Another connection holds the conversation's row (SQLite: the whole database) until
    the block ends: a slow transaction elsewhere."""
    async with engine.begin() as connection:
        await connection.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(title=Conversation.title)
        )
        yield


async def _answered(pipeline: Any, account: Any, sessionmaker: Any, text: str) -> Any:
    """A turn whose answer is in, not yet stored."""
    user = Principal(user_id=account.id, name=account.name, is_admin=False)
    async with sessionmaker() as session:
        turn = await pipeline.start_turn(session, user=user, text=text, conversation_id=None)
    answer = pipeline.answer(turn)
    [_ async for _ in answer.deltas()]
    return answer


async def test_in_a_group_only_the_answer_to_a_deleted_conversation_fails(
    app: Any,
    account: Any,
    sessionmaker: Any,
    other_engine: AsyncEngine,
    transactions: list[bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = state.of(app).get(ChatPipeline)
    metrics: Metrics = state.of(app).get(Telemetry).metrics
    # The pipeline's writes on an engine of their own, to count its transactions.
    writes = GroupCommit(other_engine, sizes=metrics.db_commit_writes, drains=1)
    monkeypatch.setattr(pipeline.answering.writer, "group", writes)
    kept = await _answered(pipeline, account, sessionmaker, "where is my order")
    gone = await _answered(pipeline, account, sessionmaker, "how do I reset my password")
    async with sessionmaker() as session, session.begin():
        await session.delete(await session.get(Conversation, gone.turn.conversation_id))
    before = _observations(metrics)
    del transactions[:]
    results = await asyncio.wait_for(
        asyncio.gather(kept.save(), gone.save(), return_exceptions=True), WAIT_S
    )
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], NotFound)
    # The group (one transaction) failed; each answer was then tried alone, and the kept
    # one committed.
    assert len(transactions) == 3
    assert _observations(metrics) - before == 1
    assert await _count(sessionmaker, Message, conversation_id=kept.turn.conversation_id) == 2
    assert await _count(sessionmaker, Message, conversation_id=gone.turn.conversation_id) == 0


async def test_an_answer_stored_late_is_stored_and_counted_once(
    app: Any,
    account: Any,
    sessionmaker: Any,
    other_engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A slow transaction holds the conversation past the answer's save timeout; the
    # stream's `finally` then calls save() a second time.
    monkeypatch.setattr(answers, "SAVE_TIMEOUT_S", 0.3)
    answer = await _answered(
        state.of(app).get(ChatPipeline), account, sessionmaker, "where is my order"
    )
    conversation_id = answer.turn.conversation_id

    def counted() -> float:
        return _answers_counted(app)

    before = counted()
    async with _row_held(other_engine, conversation_id):
        with pytest.raises(InferenceFailed, match="in time") as first:
            await answer.save()
        # The stream's `finally` asks again: the same error, without waiting again.
        with pytest.raises(InferenceFailed) as second:
            await answer.save()
        assert second.value is first.value
        assert answer.settled
        assert counted() == before
    # Nobody waits any more: the write lands, and the answer is counted then.
    for _ in range(WAIT_S * 10):
        if counted() > before:
            break
        await asyncio.sleep(0.1)
    assert counted() == before + 1
    assert await _count(sessionmaker, Message, conversation_id=conversation_id) == 2
    assert await _count(sessionmaker, ConversationMetrics, conversation_id=conversation_id) == 1
    stored = await asyncio.wait_for(answer.save(), WAIT_S)  # the same answer, not a new one
    assert await _answer_ids(sessionmaker, conversation_id) == [stored.message_id]
    assert counted() == before + 1


async def test_drains_follow_the_connection_pool(
    app: Any, account: Any, sessionmaker: Any, other_engine: AsyncEngine, backend_name: str
) -> None:
    writes: GroupCommit = state.of(app).get(ChatPipeline).answering.writer.group
    if backend_name == "sqlite":
        assert writes.max_drains == 1  # one connection, one writer
        return
    # PostgreSQL: a write held up by a lock does not hold up the others'.
    assert writes.max_drains == state.of(app).get(Database).engine.pool.size() > 1
    blocked = await _answered(
        state.of(app).get(ChatPipeline), account, sessionmaker, "where is my order"
    )
    free = await _answered(
        state.of(app).get(ChatPipeline), account, sessionmaker, "reset my password"
    )
    async with _row_held(other_engine, blocked.turn.conversation_id):
        with _executing("UPDATE conversations", about=blocked.turn.conversation_id) as held_up:
            waiting = asyncio.create_task(blocked.save())
            await _started(held_up)  # its transaction waits for the row
        await asyncio.wait_for(free.save(), 5)
        assert not waiting.done()
    await asyncio.wait_for(waiting, WAIT_S)
    assert await _count(sessionmaker, Message, conversation_id=blocked.turn.conversation_id) == 2


async def test_a_regenerated_answer_stored_late_is_stored_and_counted_once(
    client: httpx.AsyncClient,
    app: Any,
    account: Any,
    sessionmaker: Any,
    other_engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Regenerated answers are written in a session of their own, not by the group commit.
    first = await client.post(
        "/chat", json={"message": "where is my order"}, headers=account.headers
    )
    conversation_id = uuid.UUID(first.json()["conversation_id"])
    user = Principal(user_id=account.id, name=account.name, is_admin=False)
    pipeline = state.of(app).get(ChatPipeline)
    async with sessionmaker() as session:
        turn = await pipeline.start_regenerate(session, user=user, conversation_id=conversation_id)
    answer = pipeline.answer(turn)
    [_ async for _ in answer.deltas()]
    monkeypatch.setattr(answers, "SAVE_TIMEOUT_S", 0.3)
    messages_before = _answers_counted(app)
    async with _row_held(other_engine, conversation_id):
        with pytest.raises(InferenceFailed, match="in time"):
            await answer.save()
    # Nobody waits any more: the write lands, and the answer is counted then.
    for _ in range(WAIT_S * 10):
        if _answers_counted(app) > messages_before:
            break
        await asyncio.sleep(0.1)
    stored = await asyncio.wait_for(answer.save(), WAIT_S)
    # The old answer replaced, the new one stored once.
    assert await _answer_ids(sessionmaker, conversation_id) == [stored.message_id]
    messages_after = _answers_counted(app)
    assert messages_after == messages_before + 1
