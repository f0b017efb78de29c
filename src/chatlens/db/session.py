"""The request-scoped database session: one per request, committed on success."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


def _sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return maker


# Dependencies are async even where they do not await: FastAPI runs a plain `def` in its
# threadpool, a thread hop per request.
async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    return _sessionmaker(request)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with _sessionmaker(request)() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            # A request that never used its session (an API key from the cache, a write
            # through the group commit) skips the commit, and SQLAlchemy's work for it.
            if session.in_transaction() or session.new or session.deleted or session.dirty:
                await session.commit()


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SessionMakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
