"""The OpenAI Chat Completions wire format as an upstream speaks it: stream events, usage,
error bodies, and when to try again (Retry-After, backoff)."""

from __future__ import annotations

import email.utils
import random
import time
from typing import Any

import orjson

from chatlens.inference.base import Usage
from chatlens.inference.errors import UpstreamBadResponse

_BACKOFF_BASE_S = 0.25
_MAX_RETRY_AFTER_S = 30.0
MESSAGE_LIMIT = 500  # characters of an upstream error message passed on


def parse_event(payload: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamBadResponse("the model sent invalid JSON") from None
    if not isinstance(event, dict):
        raise UpstreamBadResponse("the model sent an unexpected event")
    error = event.get("error")
    if error:
        detail = error.get("message") if isinstance(error, dict) else str(error)
        raise UpstreamBadResponse(f"the model failed mid-answer: {str(detail)[:MESSAGE_LIMIT]}")
    return event


def usage_of(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    details = raw.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    try:
        return Usage(
            prompt_tokens=int(raw.get("prompt_tokens") or 0),
            completion_tokens=int(raw.get("completion_tokens") or 0),
            cached_prompt_tokens=int(cached or 0),
        )
    except (TypeError, ValueError):
        return None


def error_message(raw: bytes) -> str:
    """The upstream's own error message, from OpenAI's error shape or plain text."""
    if not raw:
        return ""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace").strip()[:MESSAGE_LIMIT]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:MESSAGE_LIMIT]
        if isinstance(error, str):
            return error[:MESSAGE_LIMIT]
        if body.get("message"):
            return str(body["message"])[:MESSAGE_LIMIT]
    return raw.decode(errors="replace").strip()[:MESSAGE_LIMIT]


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), capped; None when absent."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(0.0, seconds), _MAX_RETRY_AFTER_S)


def backoff(attempt: int, retry_after_s: float | None) -> float:
    """Full-jitter exponential backoff, or what the upstream asked for when it said."""
    if retry_after_s is not None:
        return retry_after_s
    return random.uniform(0, _BACKOFF_BASE_S * 2**attempt)  # noqa: S311 (jitter, not secrets)
