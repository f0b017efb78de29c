"""SQLite: a group commit's transaction in one hop to a writer thread, beside the async
engine's own connection, and a pool that rolls back only what is open. All of it is about
SQLite, so these run on SQLite only, each on a database of its own."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chatlens.chat import repository as repo
from chatlens.db import migrate
from chatlens.db.base import Model
from chatlens.db.batch import GroupCommit
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.db.sqlite_thread import THREAD_NAME, SqliteWriter
from chatlens.models import Conversation, Message, MessageRole, User
from tests.helpers import api_on, conversation_rows, make_settings

pytestmark = pytest.mark.asyncio

WAIT_S = 10.0


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'chatlens.db'}")
    await migrate.upgrade(settings)
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture
def maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on this test's own database (not the suite's `sessionmaker`)."""
    return create_sessionmaker(engine)


class CountingExecutor(ThreadPoolExecutor):
    """One thread, and a count of the functions handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="test-writer")
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def executor() -> Iterator[CountingExecutor]:
    pool = CountingExecutor()
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
async def on_async_connection(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    """Every SQL statement SQLite runs on the async engine's connection (its pool has one),
    from sqlite3's trace callback: the driver's BEGIN, COMMIT and ROLLBACK included."""
    run: list[str] = []
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.set_trace_callback(run.append)
    yield run
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.set_trace_callback(None)


def _counted(engine: Engine, name: str) -> list[bool]:
    """One entry per `name` event ("begin", "commit", "rollback", "close") of `engine`."""
    seen: list[bool] = []
    event.listen(engine, name, lambda *_: seen.append(True))
    return seen


def _writer_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)}


async def _user(maker: async_sessionmaker[AsyncSession]) -> uuid.UUID:
    async with maker() as session, session.begin():
        user = User(name=f"user-{uuid.uuid4().hex[:8]}", is_admin=False)
        session.add(user)
    return user.id


def _rows(user_id: uuid.UUID, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rows whose every column holds something to read back."""
    return conversation_rows(
        user_id,
        text,
        project_id="shop",
        platform="telegram",
        external_user_id="tg-42",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
    )


async def _count(maker: async_sessionmaker[AsyncSession], model: Any) -> int:
    async with maker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_on_an_in_memory_database_a_write_leaves_other_sessions_work_alone() -> None:
    # Its one connection is shared by every session, and a second connection would be
    # another database: the writer thread is not used there.
    memory = create_engine(make_settings("sqlite+aiosqlite://"))
    try:
        async with memory.begin() as connection:
            await connection.run_sync(Model.metadata.create_all)
        maker = create_sessionmaker(memory)
        user_id = await _user(maker)
        writes = GroupCommit(memory, drains=1)
        assert writes.writer is None
        async with maker() as session, session.begin():
            other = User(name="flushed, not yet committed", is_admin=False)
            session.add(other)
            await session.flush()
            await asyncio.wait_for(
                writes.write(repo.NEW_CONVERSATION, _rows(user_id, "hello")), WAIT_S
            )
        async with maker() as session:
            assert await session.get(User, other.id) is not None
        await asyncio.wait_for(writes.aclose(), WAIT_S)
    finally:
        await memory.dispose()


async def test_a_write_is_one_hop_and_one_transaction_and_reads_back_as_written(
    engine: AsyncEngine,
    maker: async_sessionmaker[AsyncSession],
    executor: CountingExecutor,
    on_async_connection: list[str],
) -> None:
    user_id = await _user(maker)
    conversation, question = _rows(user_id, "Where is my order? Заказ №12345")
    writes = GroupCommit(engine, drains=1, executor=executor)
    assert writes.writer is not None
    begun, committed = (
        _counted(writes.writer.engine, "begin"),
        _counted(writes.writer.engine, "commit"),
    )
    del on_async_connection[:]
    await asyncio.wait_for(writes.write(repo.NEW_CONVERSATION, (conversation, question)), WAIT_S)
    # Two INSERTs and the commit: one function handed to the thread, one transaction, and
    # nothing run on the async engine's connection (held meanwhile, returned without a
    # rollback).
    assert executor.submitted == 1
    assert (len(begun), len(committed)) == (1, 1)
    assert on_async_connection == []

    async with maker() as session:
        stored = await session.get(Conversation, conversation["id"])
        message = await session.get(Message, question["id"])
    assert stored is not None and message is not None
    assert (stored.user_id, stored.project_id, stored.platform, stored.external_user_id) == (
        user_id,
        "shop",
        "telegram",
        "tg-42",
    )
    assert stored.status == "open" and stored.title == conversation["title"]
    assert abs(stored.created_at - conversation["created_at"]) < timedelta(milliseconds=1)
    assert message.conversation_id == conversation["id"]
    assert message.role is MessageRole.user and message.content == question["content"]
    assert (message.trace_id, message.span_id) == (question["trace_id"], question["span_id"])
    await asyncio.wait_for(writes.aclose(), WAIT_S)


async def test_queued_writes_are_one_hop_and_one_transaction(
    engine: AsyncEngine, maker: async_sessionmaker[AsyncSession], executor: CountingExecutor
) -> None:
    user_id = await _user(maker)
    writes = GroupCommit(engine, drains=1, executor=executor)
    assert writes.writer is not None
    begun, committed = (
        _counted(writes.writer.engine, "begin"),
        _counted(writes.writer.engine, "commit"),
    )
    # Queued before the drain first runs: they are all its first group.
    queued = [
        writes.submit(repo.NEW_CONVERSATION, _rows(user_id, f"question {i}")) for i in range(6)
    ]
    await asyncio.wait_for(asyncio.gather(*queued), WAIT_S)
    assert executor.submitted == 1
    assert (len(begun), len(committed)) == (1, 1)
    assert await _count(maker, Conversation) == 6
    assert await _count(maker, Message) == 6
    await asyncio.wait_for(writes.aclose(), WAIT_S)


async def test_a_failed_transaction_leaves_nothing_and_the_connection_goes_on(
    engine: AsyncEngine, maker: async_sessionmaker[AsyncSession]
) -> None:
    user_id = await _user(maker)
    conversation, _ = _rows(user_id, "first")
    orphan = {**_rows(user_id, "orphan")[1], "conversation_id": uuid.uuid4()}

    def both(connection: Connection) -> None:
        connection.execute(insert(Conversation), conversation)
        connection.execute(insert(Message), orphan)  # no such conversation: a foreign key

    writer = SqliteWriter(engine)
    rolled_back = _counted(writer.engine, "rollback")
    with pytest.raises(IntegrityError):
        await asyncio.wait_for(writer.transaction(both), WAIT_S)
    assert len(rolled_back) == 1
    async with maker() as session:
        assert await session.get(Conversation, conversation["id"]) is None

    def one(connection: Connection) -> None:
        connection.execute(insert(Conversation), conversation)

    await asyncio.wait_for(writer.transaction(one), WAIT_S)
    async with maker() as session:
        assert await session.get(Conversation, conversation["id"]) is not None
    # The async engine's own work on the same file is unaffected.
    assert await _count(maker, Conversation) == 1
    await asyncio.wait_for(writer.aclose(), WAIT_S)


async def test_the_writer_and_the_async_engines_own_writes_take_turns(
    engine: AsyncEngine, maker: async_sessionmaker[AsyncSession]
) -> None:
    # SQLite has one writer at a time. A session of the async engine that has written and
    # not committed holds it: the group commit waits for the session (not in SQLite's busy
    # handler), and neither fails nor waits for the other forever.
    user_id = await _user(maker)
    writes = GroupCommit(engine, drains=1)
    async with maker() as session, session.begin():
        session.add(User(name="written by the async engine", is_admin=False))
        await session.flush()
        waiting = writes.submit(repo.NEW_CONVERSATION, _rows(user_id, "behind the session"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
    await asyncio.wait_for(waiting, WAIT_S)

    # Both kinds of writes at once, many of each.
    async def session_write(i: int) -> None:
        async with maker() as session, session.begin():
            session.add(User(name=f"concurrent {i}", is_admin=False))

    results = await asyncio.wait_for(
        asyncio.gather(
            *(writes.write(repo.NEW_CONVERSATION, _rows(user_id, f"q {i}")) for i in range(20)),
            *(session_write(i) for i in range(20)),
            return_exceptions=True,
        ),
        WAIT_S,
    )
    assert [r for r in results if r is not None] == []
    assert await _count(maker, Conversation) == 21
    assert await _count(maker, User) == 22
    await asyncio.wait_for(writes.aclose(), WAIT_S)


async def test_a_cancelled_transaction_ends_before_the_async_engine_may_write(
    engine: AsyncEngine, maker: async_sessionmaker[AsyncSession]
) -> None:
    user_id = await _user(maker)
    conversation, _ = _rows(user_id, "committed after its caller went away")
    started, release = threading.Event(), threading.Event()

    def slow(connection: Connection) -> None:
        connection.execute(insert(Conversation), conversation)
        started.set()
        release.wait(WAIT_S)

    writer = SqliteWriter(engine)
    caller = asyncio.create_task(writer.transaction(slow))
    assert await asyncio.to_thread(started.wait, WAIT_S)
    caller.cancel()
    await asyncio.sleep(0.1)
    # The thread cannot be stopped: the async engine's connection stays held until it ends.
    assert not caller.done()
    assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, WAIT_S)
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    async with maker() as session:
        assert await session.get(Conversation, conversation["id"]) is not None
    await asyncio.wait_for(writer.aclose(), WAIT_S)


async def test_aclose_closes_the_connection_on_its_thread_and_ends_the_thread(
    engine: AsyncEngine, maker: async_sessionmaker[AsyncSession]
) -> None:
    user_id = await _user(maker)
    before = _writer_threads()
    writes = GroupCommit(engine, drains=1)
    assert writes.writer is not None
    first = writes.writer.engine
    closed = _counted(first, "close")
    await asyncio.wait_for(writes.write(repo.NEW_CONVERSATION, _rows(user_id, "one")), WAIT_S)
    (thread,) = _writer_threads() - before
    await asyncio.wait_for(writes.aclose(), WAIT_S)
    assert len(closed) == 1
    assert not thread.is_alive()
    # A write that comes later (a late answer) is committed all the same, on a new thread.
    await asyncio.wait_for(writes.write(repo.NEW_CONVERSATION, _rows(user_id, "two")), WAIT_S)
    assert writes.writer.engine is not first
    assert len(_writer_threads() - before) == 1
    await asyncio.wait_for(writes.aclose(), WAIT_S)
    await asyncio.wait_for(writes.aclose(), WAIT_S)  # twice is fine
    assert _writer_threads() - before == set()
    assert await _count(maker, Conversation) == 2


async def test_the_service_ends_its_writer_thread_when_it_stops(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'chatlens.db'}"
    await migrate.upgrade(make_settings(url))
    before = _writer_threads()
    async with api_on(url) as (client, headers):
        response = await client.post("/chat", json={"message": "hello"}, headers=headers)
        assert response.status_code == 200
        assert len(_writer_threads() - before) == 1
    assert _writer_threads() - before == set()


async def test_the_pool_rolls_back_what_is_left_open_and_nothing_else(
    engine: AsyncEngine, maker: async_sessionmaker[AsyncSession], on_async_connection: list[str]
) -> None:
    user_id = await _user(maker)
    committed, _ = _rows(user_id, "committed")

    del on_async_connection[:]
    async with maker() as session:
        await session.execute(insert(Conversation), committed)
        await session.commit()
    assert "COMMIT" in on_async_connection
    assert "ROLLBACK" not in on_async_connection  # committed: nothing to undo

    # A transaction the driver has open and SQLAlchemy does not know of (work done on the
    # raw connection): the pool must roll it back when it gets the connection back.
    del on_async_connection[:]
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute("UPDATE conversations SET title = 'changed'")
        assert driver.in_transaction
    assert "ROLLBACK" in on_async_connection

    async with maker() as session:
        stored = await session.get(Conversation, committed["id"])
    assert stored is not None and stored.title == "committed"
