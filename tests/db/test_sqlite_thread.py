"""SQLite: a group commit's transaction in one trip to the driver's thread, and a pool that
rolls back only what is open. Both are about SQLite's driver, so these run on SQLite only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Connection, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chatlens.chat import repository as repo
from chatlens.db import migrate
from chatlens.db.base import Model
from chatlens.db.batch import GroupCommit
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.db.sqlite_thread import SqliteThread
from chatlens.models import Conversation, Message, MessageRole, User
from tests.helpers import conversation_rows, make_settings

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


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every function sent to an aiosqlite connection's thread."""
    sent: list[str] = []
    send = aiosqlite.Connection._execute

    async def counted(
        self: aiosqlite.Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        target = args[0] if fn.__name__ == "run" and args else fn  # a context's run
        sent.append(getattr(target, "__name__", repr(target)))
        return await send(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return sent


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


async def test_on_an_in_memory_database_a_write_leaves_other_sessions_work_alone() -> None:
    # Its one connection is shared by every session: the one-trip path (whose synchronous
    # engine rolls back on its first connect) must not be used there.
    memory = create_engine(make_settings("sqlite+aiosqlite://"))
    try:
        async with memory.begin() as connection:
            await connection.run_sync(Model.metadata.create_all)
        maker = create_sessionmaker(memory)
        user_id = await _user(maker)
        writes = GroupCommit(memory, drains=1)
        async with maker() as session, session.begin():
            other = User(name="flushed, not yet committed", is_admin=False)
            session.add(other)
            await session.flush()
            await asyncio.wait_for(
                writes.write(repo.NEW_CONVERSATION, _rows(user_id, "hello")), WAIT_S
            )
        async with maker() as session:
            assert await session.get(User, other.id) is not None
    finally:
        await memory.dispose()


async def test_a_write_is_one_trip_and_reads_back_as_written(
    engine: AsyncEngine, maker: async_sessionmaker[AsyncSession], trips: list[str]
) -> None:
    user_id = await _user(maker)
    conversation, question = _rows(user_id, "Where is my order? Заказ №12345")
    writes = GroupCommit(engine, drains=1)
    del trips[:]
    await asyncio.wait_for(writes.write(repo.NEW_CONVERSATION, (conversation, question)), WAIT_S)
    # Two INSERTs and the commit, in one trip; the pool's return needs none after a commit.
    assert trips == ["_transaction"]

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


async def test_a_failed_transaction_leaves_nothing_and_the_connection_goes_on(
    engine: AsyncEngine, maker: async_sessionmaker[AsyncSession]
) -> None:
    user_id = await _user(maker)
    conversation, _ = _rows(user_id, "first")
    orphan = {**_rows(user_id, "orphan")[1], "conversation_id": uuid.uuid4()}

    def both(connection: Connection) -> None:
        connection.execute(insert(Conversation), conversation)
        connection.execute(insert(Message), orphan)  # no such conversation: a foreign key

    thread = SqliteThread(engine)
    with pytest.raises(IntegrityError):
        await asyncio.wait_for(thread.transaction(both), WAIT_S)
    async with maker() as session:
        assert await session.get(Conversation, conversation["id"]) is None

    await asyncio.wait_for(
        thread.transaction(lambda c: c.execute(insert(Conversation), conversation) and None),
        WAIT_S,
    )
    async with maker() as session:
        assert await session.get(Conversation, conversation["id"]) is not None
        # The async engine's own work on the same connection is unaffected.
        assert await session.scalar(select(func.count()).select_from(Conversation)) == 1


async def test_the_pool_rolls_back_what_is_left_open_and_nothing_else(
    engine: AsyncEngine, maker: async_sessionmaker[AsyncSession], trips: list[str]
) -> None:
    user_id = await _user(maker)
    committed, _ = _rows(user_id, "committed")

    del trips[:]
    async with maker() as session:
        await session.execute(insert(Conversation), committed)
        await session.commit()
    assert "rollback" not in trips  # committed: nothing to undo

    # A transaction the driver has open and SQLAlchemy does not know of (work done on the
    # raw connection): the pool must roll it back when it gets the connection back.
    del trips[:]
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute("UPDATE conversations SET title = 'changed'")
        assert driver.in_transaction
    assert "rollback" in trips

    async with maker() as session:
        stored = await session.get(Conversation, committed["id"])
    assert stored is not None and stored.title == "committed"
