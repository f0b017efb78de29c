"""The OpenAI Chat Completions wire format as an upstream speaks it: stream events, usage,
error bodies, and when to try again (Retry-After, backoff)."""

from __future__ import annotations

import email.utils
import errno
import random
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import orjson
import structlog

from chatlens.inference.base import MAX_TOKENS, Usage
from chatlens.inference.errors import UpstreamBadResponse

log = structlog.get_logger(__name__)

_BACKOFF_BASE_S = 0.25
_MAX_RETRY_AFTER_S = 30.0
MESSAGE_LIMIT = 500  # characters of an upstream error message passed on

# What an upstream says is believed only within these bounds, as a client's input is: the
# numbers go into the database, the metrics and the cost; the names into labels and logs.
MAX_ANSWER_CHARS = 200_000  # an answer longer than this is cut, finish_reason "length"
MODEL_NAME = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, as stored (128)
MAX_MODELS = 1000  # ids of GET /models listed
FINISH_REASON = re.compile(r"[a-z_]{1,32}")  # stop, length, content_filter, tool_calls, ...


@dataclass(slots=True)
class Distrust:
    """The upstream's values refused during one answer: each field logged once, with why."""

    model: str  # the model asked for, to tell whose answer it was
    fields: list[str] = field(default_factory=list)

    def refuse(self, name: str, reason: str) -> None:
        if name in self.fields:
            return
        self.fields.append(name)
        log.warning("upstream_value_rejected", model=self.model, field=name, reason=reason)


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


def _count(value: Any) -> int | None:
    """A token count as the wire may carry it: a whole number in [0, MAX_TOKENS], else None."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        return None
    return value


def usage_of(raw: Any, distrust: Distrust) -> Usage | None:
    """The upstream's usage, or None (chatlens then counts the tokens itself) when a number
    is not a whole count within bounds: negative, absurd or not a number."""
    if not isinstance(raw, dict):
        distrust.refuse("usage", "not an object")
        return None
    prompt = _count(raw.get("prompt_tokens"))
    completion = _count(raw.get("completion_tokens"))
    if prompt is None or completion is None:
        distrust.refuse("usage", f"token counts outside 0..{MAX_TOKENS}")
        return None
    details = raw.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    if cached is None or cached > prompt:
        distrust.refuse("usage.cached_tokens", "outside 0..prompt_tokens")
        cached = 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cached_prompt_tokens=cached)


def model_of(value: Any, distrust: Distrust) -> str | None:
    """The answering model's name when it is one chatlens can store and label; else None."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and MODEL_NAME.fullmatch(value):
        return value
    distrust.refuse("model", "not 1-128 printable ASCII characters")
    return None


def model_ids(data: Any) -> list[str]:
    """The ids of GET /models that are model names chatlens can store, at most MAX_MODELS."""
    items = data if isinstance(data, list) else []
    ids = {item.get("id") for item in items if isinstance(item, dict)}
    valid = sorted(i for i in ids if isinstance(i, str) and MODEL_NAME.fullmatch(i))
    if len(valid) < len(ids) or len(valid) > MAX_MODELS:
        log.warning(
            "upstream_value_rejected",
            field="models",
            reason=f"ids that are not 1-128 printable ASCII characters, or past {MAX_MODELS}",
            rejected=len(ids) - min(len(valid), MAX_MODELS),
        )
    return valid[:MAX_MODELS]


def finish_reason_of(value: Any, distrust: Distrust) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and FINISH_REASON.fullmatch(value):
        return value
    distrust.refuse("finish_reason", "not 1-32 lowercase letters or underscores")
    return None


def content_of(value: Any, distrust: Distrust) -> str:
    """A delta's text, without NUL characters (no database stores them)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UpstreamBadResponse("the model sent an answer that is not text")
    text: str = value
    if "\x00" in text:
        distrust.refuse("content", "NUL characters removed")
        text = text.replace("\x00", "")
    return text


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


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def unreachable(exc: BaseException, where: str, connect_timeout_s: float) -> str:
    """What went wrong reaching the model server at `where` (host:port), in words: its
    host unknown, the connection refused or not answered in time, TLS failed."""
    chain = _causes(exc)
    if any(isinstance(e, (aiohttp.ClientConnectorDNSError, socket.gaierror)) for e in chain):
        return f"the model server's host in {where} could not be found"
    if any(
        isinstance(e, ConnectionRefusedError)
        or (isinstance(e, OSError) and e.errno == errno.ECONNREFUSED)
        for e in chain
    ):
        return f"the model server at {where} refused the connection"
    if any(isinstance(e, (aiohttp.ClientSSLError, ssl.SSLError)) for e in chain):
        return f"the TLS handshake with the model server at {where} failed"
    if any(isinstance(e, (ConnectionResetError, aiohttp.ServerDisconnectedError)) for e in chain):
        return f"the model server at {where} closed the connection"
    if any(isinstance(e, (TimeoutError, aiohttp.ConnectionTimeoutError)) for e in chain) or (
        len(chain) == 1 and isinstance(exc, httpx.ConnectTimeout)
    ):
        return f"the model server at {where} did not answer within {connect_timeout_s:g} s"
    return f"the model server at {where} could not be reached ({type(chain[-1]).__name__})"
