"""The reads of an export: a dataset's rows of a range, in time order, from a server-side
cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.analytics.filters import Filters
from chatlens.analytics.repository import scope
from chatlens.models import Conversation, ConversationMetrics, Message

Dataset = Literal["conversation_metrics", "conversations", "messages"]
# Every column of the table, in `columns(dataset)` order. A plain tuple rather than a class
# per table: an export carries whatever columns the table has, and 1,000,000 rows must not
# each build an object.
Record = tuple[Any, ...]
_BATCH = 1000


@dataclass(frozen=True)
class Source:
    table: Table
    time: str  # the column the date range applies to
    project: str | None  # the project column, when the table has one
    platform: str | None


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


SOURCES: dict[str, Source] = {
    "conversation_metrics": Source(
        _table(ConversationMetrics), "timestamp", "project_id", "platform"
    ),
    "conversations": Source(_table(Conversation), "created_at", "project_id", "platform"),
    "messages": Source(_table(Message), "created_at", "project_id", None),
}


def columns(dataset: str) -> list[str]:
    return [c.name for c in SOURCES[dataset].table.columns]


async def records(session: AsyncSession, dataset: str, f: Filters) -> AsyncIterator[Record]:
    """The dataset's rows in time order, each yielded as read (batches of 1,000 a fetch)."""
    source = SOURCES[dataset]
    table = source.table
    time_column = table.c[source.time]
    query = (
        select(*table.c)
        .where(
            *scope.where(
                f,
                time=time_column,
                project=table.c[source.project] if source.project is not None else None,
                platform=table.c[source.platform] if source.platform is not None else None,
            )
        )
        .order_by(time_column, table.c.id)
        .execution_options(yield_per=_BATCH)
    )
    result = await session.stream(query)
    async for partition in result.partitions(_BATCH):
        for row in partition:
            yield tuple(row)
