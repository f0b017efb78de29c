"""SQL for request_stats: every replica's counted requests, for the SLA."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.models import RequestStat
from chatlens.observability.request_stats import LATENCY_BOUNDS_MS


@dataclass(frozen=True)
class RequestTotals:
    count: int
    errors: int  # answered 5xx
    latency_sum_ms: float
    buckets: tuple[int, ...]  # cumulative, one per bound of LATENCY_BOUNDS_MS


def add(session: AsyncSession, rows: list[RequestStat]) -> None:
    session.add_all(rows)


async def totals(
    session: AsyncSession, *, start: datetime, end: datetime | None = None
) -> RequestTotals:
    """Totals in [start, end) (no end: until now), every route and replica: requests, 5xx,
    latency sum and the cumulative buckets."""
    query = select(
        func.sum(RequestStat.count),
        func.sum(case((RequestStat.status_class == "5xx", RequestStat.count), else_=0)),
        func.sum(RequestStat.latency_sum_ms),
        *(func.sum(getattr(RequestStat, f"le_{bound}")) for bound in LATENCY_BOUNDS_MS),
    ).where(RequestStat.minute >= start)
    if end is not None:
        query = query.where(RequestStat.minute < end)
    row = (await session.execute(query)).one()
    count, errors, latency, *buckets = (float(v or 0) for v in row)
    return RequestTotals(
        count=int(count),
        errors=int(errors),
        latency_sum_ms=latency,
        buckets=tuple(int(b) for b in buckets),
    )
