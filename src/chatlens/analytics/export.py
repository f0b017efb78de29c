"""Exports of a date range: CSV and JSON lines written as rows are read, XLSX in constant memory."""

from __future__ import annotations

import csv
import io
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Literal

import orjson
import xlsxwriter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatlens.analytics.filters import Filters
from chatlens.analytics.repository import export as repo
from chatlens.analytics.repository.export import SOURCES, Dataset, Record, columns

__all__ = ["MEDIA_TYPES", "SOURCES", "Dataset", "Format", "columns", "download", "stream"]

Format = Literal["csv", "json", "xlsx"]
_BATCH = 1000
_CHUNK = 64 * 1024
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
EXTENSIONS = {"csv": "csv", "json": "jsonl", "xlsx": "xlsx"}
XLSX_ROWS = 1_048_576  # rows a sheet holds, the header included


def file_name(dataset: str, f: Filters, fmt: Format) -> str:
    last = f.end.date().toordinal() - 1
    end = date.fromordinal(last)
    return f"chatlens-{dataset}-{f.start.date()}-{end}.{EXTENSIONS[fmt]}"


def plain(number: Decimal | float) -> str:
    """A number written out in full, as a person would: 0, 0.00012, 1500; never 0E-8 or 1e-05."""
    exact = Decimal(repr(number)) if isinstance(number, float) else number
    if not exact.is_finite():
        return str(number)
    return format(exact.normalize(), "f")


def _plain(value: Any) -> Any:
    """A value for JSON lines: money as a decimal string, which a float would round."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def _csv(value: Any) -> Any:
    """A value for CSV, where every number is text: written out in full."""
    if isinstance(value, float):
        return plain(value)
    return _plain(value)


async def rows(
    sessionmaker: async_sessionmaker[AsyncSession], dataset: str, f: Filters
) -> AsyncIterator[Record]:
    """The dataset's rows in time order, read by a session of their own as they are sent."""
    async with sessionmaker() as session:
        async for record in repo.records(session, dataset, f):
            yield record


@dataclass(frozen=True)
class Download:
    name: str
    media_type: str
    chunks: AsyncIterator[bytes]


async def download(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    dataset: Dataset,
    filters: Filters,
    fmt: Format,
) -> Download:
    """A file of the dataset, streamed; the request's session lets its connection go first
    (the rows are read by their own, and SQLite's pool holds one connection)."""
    await session.commit()
    return Download(
        name=file_name(dataset, filters, fmt),
        media_type=MEDIA_TYPES[fmt],
        chunks=stream(sessionmaker, dataset, filters, fmt),
    )


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
            writer.writerow([_csv(v) for v in row])
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
        line = {name: _plain(value) for name, value in zip(names, row, strict=True)}
        batch.append(orjson.dumps(line) + b"\n")
        if len(batch) >= _BATCH:
            yield b"".join(batch)
            batch.clear()
    yield b"".join(batch)


class _Sheets:
    """Typed cells, so a spreadsheet can sum, sort and filter them, and more sheets when one
    is full (Excel holds 1,048,576 rows a sheet; xlsxwriter drops the rest silently)."""

    def __init__(self, book: xlsxwriter.Workbook, dataset: str, names: list[str]) -> None:
        self.book, self.dataset, self.names = book, dataset, names
        self.when = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.money = book.add_format({"num_format": "0.00######"})
        self.sheets = 0
        self._add_sheet()

    def _add_sheet(self) -> None:
        self.sheets += 1
        suffix = "" if self.sheets == 1 else f" ({self.sheets})"
        self.sheet = self.book.add_worksheet(self.dataset[: 31 - len(suffix)] + suffix)
        self.sheet.write_row(0, 0, self.names)
        self.row = 1

    def append(self, values: Sequence[Any]) -> None:
        if self.row >= XLSX_ROWS:
            self._add_sheet()
        for column, value in enumerate(values):
            self._cell(column, value)
        self.row += 1

    def _cell(self, column: int, value: Any) -> None:
        sheet, row = self.sheet, self.row
        if value is None:
            return  # an empty cell
        if isinstance(value, bool):
            sheet.write_boolean(row, column, value)
        elif isinstance(value, datetime):
            # Excel has no time zones: the cell holds the UTC time, as every export does.
            sheet.write_datetime(row, column, value.astimezone(UTC).replace(tzinfo=None), self.when)
        elif isinstance(value, Decimal):
            sheet.write_number(row, column, float(value), self.money)
        elif isinstance(value, int | float):
            sheet.write_number(row, column, value)
        elif isinstance(value, Enum):
            sheet.write_string(row, column, str(value.value))
        else:
            # Text stays text: never a formula or a link, whatever a message says.
            sheet.write_string(row, column, str(value))


async def _xlsx(
    sessionmaker: async_sessionmaker[AsyncSession], dataset: str, f: Filters, names: list[str]
) -> AsyncIterator[bytes]:
    """xlsxwriter's constant-memory mode writes each row to disk as it comes; then the file."""
    handle, path = tempfile.mkstemp(prefix="chatlens-export-", suffix=".xlsx")
    os.close(handle)
    try:
        book = xlsxwriter.Workbook(path, {"constant_memory": True})
        sheets = _Sheets(book, dataset, names)
        async for row in rows(sessionmaker, dataset, f):
            sheets.append(row)
        book.close()
        for chunk in _read(path):
            yield chunk
    finally:
        os.unlink(path)


def _read(path: str) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk
