"""Filters to WHERE clauses, in one place: the range on a row's own time, then the
project and the platform, on the row's own columns or on its conversation's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, select

from chatlens.analytics.filters import Filters
from chatlens.models import Conversation


def where(
    f: Filters,
    *,
    time: Any | None,
    project: Any | None = None,
    platform: Any | None = None,
) -> list[ColumnElement[bool]]:
    """`time` in [start, end) and the project and platform columns, each when given (None:
    the table has no such column, or the caller applies the range itself)."""
    clauses: list[ColumnElement[bool]] = []
    if time is not None:
        clauses += [time >= f.start, time < f.end]
    if f.project_id is not None and project is not None:
        clauses.append(project == f.project_id)
    if f.platform is not None and platform is not None:
        clauses.append(platform == f.platform)
    return clauses


def conversations(f: Filters, *, time: Any | None = None) -> list[ColumnElement[bool]]:
    """On rows joined with their conversation: its project and platform, `time` in range."""
    return where(f, time=time, project=Conversation.project_id, platform=Conversation.platform)


def owned(f: Filters, conversation_id: Any) -> list[ColumnElement[bool]]:
    """Without a join: the row's conversation is one of the project's and platform's."""
    narrowing = conversations(f)
    if not narrowing:
        return []
    return [conversation_id.in_(select(Conversation.id).where(*narrowing))]
