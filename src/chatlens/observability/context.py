"""Per-request context shared by logs, errors and responses."""

from __future__ import annotations

from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("chatlens_request_id", default=None)


def get_request_id() -> str | None:
    """The current request's id, or None outside a request."""
    return _request_id.get()


def set_request_id(value: str | None) -> None:
    _request_id.set(value)
