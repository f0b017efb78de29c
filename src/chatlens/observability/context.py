"""Per-request context shared by logs, errors and responses."""

from __future__ import annotations

from contextvars import ContextVar, Token

_request_id: ContextVar[str | None] = ContextVar("chatlens_request_id", default=None)


def get_request_id() -> str | None:
    """The current request's id, or None outside a request."""
    return _request_id.get()


def set_request_id(value: str | None) -> Token[str | None]:
    """Set the current request's id; the token restores the one before (end_request_id)."""
    return _request_id.set(value)


def end_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)
