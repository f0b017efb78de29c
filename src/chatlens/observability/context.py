"""Per-request context shared by logs, errors and responses."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass

_request_id: ContextVar[str | None] = ContextVar("chatlens_request_id", default=None)


@dataclass(slots=True)
class Verdict:
    """Whether a response failed after its status was sent (a stream that broke off): the
    SLA counts it as the 5xx it would have been. Shared, not copied, by the tasks a
    response runs in."""

    failed: bool = False


_verdict: ContextVar[Verdict | None] = ContextVar("chatlens_verdict", default=None)


def get_request_id() -> str | None:
    """The current request's id, or None outside a request."""
    return _request_id.get()


def set_request_id(value: str | None) -> Token[str | None]:
    """Set the current request's id; the token restores the one before (end_request_id)."""
    return _request_id.set(value)


def end_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)


def start_verdict() -> tuple[Verdict, Token[Verdict | None]]:
    verdict = Verdict()
    return verdict, _verdict.set(verdict)


def end_verdict(token: Token[Verdict | None]) -> None:
    _verdict.reset(token)


def mark_failed() -> None:
    """The current response failed, whatever its status said."""
    verdict = _verdict.get()
    if verdict is not None:
        verdict.failed = True
