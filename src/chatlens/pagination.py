"""Opaque keyset cursors: a position (timestamp, id) in a stable order."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Generic, TypeVar

import orjson
from pydantic import AfterValidator

from chatlens.errors import ValidationFailed
from chatlens.fields import FIRST_DAY, LAST_DAY, TextSchema
from chatlens.models import Conversation, Message

NOT_A_CURSOR = "not a cursor this API returned"

_CURSOR = "^[A-Za-z0-9_-]{40,200}$"


def _cursor_shape(value: str) -> str:
    if not re.match(_CURSOR, value):
        raise ValueError(NOT_A_CURSOR)
    return value


# A cursor's shape (unpadded base64url of a short JSON array); its content is checked on use.
CursorText = Annotated[str, AfterValidator(_cursor_shape), TextSchema(_CURSOR)]


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = orjson.dumps([self.created_at.isoformat(), str(self.id)])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            created_at, id_ = orjson.loads(raw)
            cursor = cls(datetime.fromisoformat(created_at), uuid.UUID(id_))
        except (ValueError, TypeError, orjson.JSONDecodeError):
            raise ValidationFailed(f"cursor: {NOT_A_CURSOR}") from None
        # Aware, and within the days a row can have (at the edges of Python's dates, the
        # conversion to UTC overflows).
        if cursor.created_at.tzinfo is None or not (
            FIRST_DAY <= cursor.created_at.date() <= LAST_DAY
        ):
            raise ValidationFailed(f"cursor: {NOT_A_CURSOR}")
        return cursor


def decode_cursor(value: str | None) -> Cursor | None:
    return None if value is None else Cursor.decode(value)


RowT = TypeVar("RowT", Conversation, Message)


@dataclass(frozen=True, slots=True)
class Slice(Generic[RowT]):
    """One page of rows and the cursor of the next."""

    items: list[RowT]
    next_cursor: str | None

    @classmethod
    def of(cls, rows: Sequence[RowT], limit: int) -> Slice[RowT]:
        """From `limit + 1` fetched rows: the extra one only says that a next page exists."""
        items = list(rows[:limit])
        more = len(rows) > limit and bool(items)
        return cls(items, Cursor(items[-1].created_at, items[-1].id).encode() if more else None)
