"""The request-scoped database session: one per request, committed on success."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chatlens.state import state_of


@dataclass(frozen=True, slots=True)
class Database:
    """The application state's database part, opened by the lifespan."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]


# Dependencies are async even where they do not await: FastAPI runs a plain `def` in its
# threadpool, a thread hop per request.
async def get_database(request: Request) -> Database:
    return state_of(request).get(Database)


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    return state_of(request).get(Database).sessionmaker


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's one session; it connects on first use, so a request that never queries
    (an API key from the cache, writes through the group commit) opens no connection."""
    session = state_of(request).get(Database).sessionmaker()
    try:
        yield session
    except BaseException:
        if session.in_transaction():
            await session.rollback()
        raise
    else:
        # A request that never used its session skips the commit, and SQLAlchemy's
        # work for it.
        if session.in_transaction() or session.new or session.deleted or session.dirty:
            await session.commit()
    finally:
        # Outside a transaction a session holds no connection: closing it would only cost a
        # greenlet switch, on every request that has nothing to release.
        if session.in_transaction():
            await session.close()


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SessionMakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
DatabaseDep = Annotated[Database, Depends(get_database)]
