"""The chat side's background work: the active-conversations gauge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatlens.chat.conversations import count_active_conversations
from chatlens.observability.metrics import Metrics
from chatlens.periodic import every

log = structlog.get_logger(__name__)


@asynccontextmanager
async def gauging_active_conversations(
    sessionmaker: async_sessionmaker[AsyncSession],
    metrics: Metrics,
    *,
    window_s: int,
    interval_s: float,
) -> AsyncIterator[None]:
    """Every replica reports the same active_sessions: it is read from the database."""

    async def refresh() -> None:
        try:
            count = await count_active_conversations(sessionmaker, window_s=window_s)
            metrics.active_sessions.set(count)
        except Exception as exc:  # a refresh must never stop the loop
            log.warning(
                "gauge_refresh_failed", gauge="active_sessions", error_type=type(exc).__name__
            )

    async with every(interval_s, refresh, now=True):
        yield
