"""Exports of a date range: CSV and JSON lines written as rows are read, XLSX in constant memory."""

from __future__ import annotations

import csv
import io
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Literal

import orjson
import xlsxwriter
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatlens.analytics.summary import Filters
from chatlens.models import Conversation, ConversationMetrics, Message

Format = Literal["csv", "json", "xlsx"]
Dataset = Literal["conversation_metrics", "conversations", "messages"]
_BATCH = 1000
_CHUNK = 64 * 1024
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
EXTENSIONS = {"csv": "csv", "json": "jsonl", "xlsx": "xlsx"}


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


def file_name(dataset: str, f: Filters, fmt: Format) -> str:
    last = f.end.date().toordinal() - 1
    end = date.fromordinal(last)
    return f"chatlens-{dataset}-{f.start.date()}-{end}.{EXTENSIONS[fmt]}"


def columns(dataset: str) -> list[str]:
    return [c.name for c in SOURCES[dataset].table.columns]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


async def rows(
    sessionmaker: async_sessionmaker[AsyncSession], dataset: str, f: Filters
) -> AsyncIterator[list[Any]]:
    """The dataset's rows in time order, read in batches from a server-side cursor."""
    source = SOURCES[dataset]
    table = source.table
    time_column = table.c[source.time]
    query = select(*table.c).where(time_column >= f.start, time_column < f.end)
    if f.project_id is not None and source.project is not None:
        query = query.where(table.c[source.project] == f.project_id)
    if f.platform is not None and source.platform is not None:
        query = query.where(table.c[source.platform] == f.platform)
    query = query.order_by(time_column, table.c.id).execution_options(yield_per=_BATCH)
    async with sessionmaker() as session:
        result = await session.stream(query)
        async for partition in result.partitions(_BATCH):
            for row in partition:
                yield [_plain(v) for v in row]


async def stream(
    sessionmaker: async_sessionmaker[AsyncSession], dataset: str, f: Filters, fmt: Format
) -> AsyncIterator[bytes]:
    names = columns(dataset)
    if fmt == "xlsx":
        async for chunk in _xlsx(sessionmaker, dataset, f, names):
            yield chunk
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(names)
        pending = 1
        async for row in rows(sessionmaker, dataset, f):
            writer.writerow(row)
            pending += 1
            if pending >= _BATCH:
                yield buffer.getvalue().encode()
                buffer.seek(0)
                buffer.truncate()
                pending = 0
        yield buffer.getvalue().encode()
        return
    batch: list[bytes] = []
    async for row in rows(sessionmaker, dataset, f):
        batch.append(orjson.dumps(dict(zip(names, row, strict=True))) + b"\n")
        if len(batch) >= _BATCH:
            yield b"".join(batch)
            batch.clear()
    yield b"".join(batch)


async def _xlsx(
    sessionmaker: async_sessionmaker[AsyncSession], dataset: str, f: Filters, names: list[str]
) -> AsyncIterator[bytes]:
    """xlsxwriter's constant-memory mode writes each row to disk as it comes; then the file."""
    handle, path = tempfile.mkstemp(prefix="chatlens-export-", suffix=".xlsx")
    os.close(handle)
    try:
        book = xlsxwriter.Workbook(path, {"constant_memory": True})
        sheet = book.add_worksheet(dataset[:31])
        sheet.write_row(0, 0, names)
        number = 1
        async for row in rows(sessionmaker, dataset, f):
            sheet.write_row(number, 0, row)
            number += 1
        book.close()
        for chunk in _read(path):
            yield chunk
    finally:
        os.unlink(path)


def _read(path: str) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk
