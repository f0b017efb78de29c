"""Engine and session factory: the only place connections are configured."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState, StaticPool

from chatlens.settings import Settings

# sqlite3's own busy timeout until the pragma below replaces it.
_SQLITE_CONNECT_ARGS = {"timeout": 30}


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes a second writer wait
    # instead of failing at once with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _rollback_if_open(
    dbapi_connection: Any, record: ConnectionPoolEntry, state: PoolResetState
) -> None:
    """The pool's reset for aiosqlite connections: a rollback only when a transaction is open.

    The pool's default rolls back every connection it gets back, a trip to the driver's
    thread even after a commit. sqlite3 says whether a transaction is open without one.
    Installed with `pool_reset_on_return=None`.
    """
    if state.terminate_only or not state.asyncio_safe or state.transaction_was_reset:
        return  # closed next, or already rolled back
    driver = record.driver_connection
    try:
        open_transaction = driver is None or driver.in_transaction
    except ValueError:  # aiosqlite's connection is closed already: nothing to roll back
        return
    if open_transaction:
        dbapi_connection.rollback()


def create_engine(settings: Settings) -> AsyncEngine:
    """An async engine for the configured database."""
    # No echo=True: SQLAlchemy would add its own plain-text handler. CHATLENS_DATABASE_ECHO
    # raises the sqlalchemy.engine logger to INFO instead, so SQL lines are JSON like the rest.
    # SQL parameters carry customers' messages: kept out of logs and errors unless
    # CHATLENS_LOG_MESSAGE_CONTENT allows message text in logs.
    kwargs: dict[str, Any] = {"hide_parameters": not settings.log_message_content}
    if settings.is_sqlite:
        if settings.database_path is None:
            # One shared connection, or every session would see its own empty database.
            kwargs["poolclass"] = StaticPool
        else:
            # SQLite has one writer. Several connections in one process would upgrade read
            # transactions to writes concurrently and wait in SQLite's busy handler (sleeps
            # of up to 100 ms); one pooled connection makes requests queue in the pool
            # instead, which is both faster and fair. Sessions release it at commit, so code
            # must commit (as the chat pipeline does) before it waits on another session.
            kwargs.update(pool_size=1, max_overflow=0, pool_timeout=30)
        kwargs["connect_args"] = dict(_SQLITE_CONNECT_ARGS)
        # The pool rolls a connection back only when a transaction is open (the reset
        # event below), not after every commit.
        kwargs["pool_reset_on_return"] = None
    else:
        kwargs.update(
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
        )
    engine = sa_asyncio.create_async_engine(settings.database, **kwargs)
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "reset", _rollback_if_open)
    return engine


def create_sqlite_writer(engine: AsyncEngine) -> Engine:
    """A synchronous engine on the SQLite file of `engine`, its connections set up as the
    async engine's are: for the writer thread of `chatlens.db.sqlite_thread`, which makes
    its one connection and keeps it (a StaticPool), on that thread, and disposes of it there."""
    writer = sqlalchemy.create_engine(
        engine.url.set(drivername="sqlite"),
        poolclass=StaticPool,
        connect_args=dict(_SQLITE_CONNECT_ARGS),
        hide_parameters=engine.sync_engine.hide_parameters,
    )
    event.listen(writer, "connect", _sqlite_pragmas)
    return writer


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
