"""The OpenAI Chat Completions wire format as an upstream speaks it: stream events, usage,
error bodies, and when to try again (Retry-After, backoff)."""

from __future__ import annotations

import asyncio
import email.utils
import errno
import random
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import orjson
import structlog

from chatlens.inference.base import MAX_TOKENS, Usage
from chatlens.inference.errors import UpstreamBadResponse, UpstreamTimeout
from chatlens.observability.redaction import redact

log = structlog.get_logger(__name__)

# What a call to the upstream may raise: httpx's errors, and aiohttp's that the transport
# passes on unmapped.
CLIENT_ERRORS = (httpx.HTTPError, aiohttp.ClientError)

_BACKOFF_BASE_S = 0.25
_MAX_RETRY_AFTER_S = 30.0
MESSAGE_LIMIT = 500  # characters of an upstream error message passed on

# What an upstream says is believed only within these bounds, as a client's input is: the
# numbers go into the database, the metrics and the cost; the names into labels and logs.
MAX_ANSWER_CHARS = 200_000  # an answer longer than this is cut, finish_reason "length"
MAX_LINE_BYTES = 1024 * 1024  # a stream line longer than this is a broken stream: 502
MAX_ERROR_BODY_BYTES = 64 * 1024  # of an error response, read; the rest is left unread
MAX_MODELS_BODY_BYTES = 8 * 1024 * 1024  # a GET /models body read at most (8 MiB)
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


def parse_event(payload: bytes, *, prompt: Sequence[str] = ()) -> dict[str, Any]:
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise UpstreamBadResponse("the model sent invalid JSON") from None
    if not isinstance(event, dict):
        raise UpstreamBadResponse("the model sent an unexpected event")
    error = event.get("error")
    if error:
        detail = error_message(orjson.dumps({"error": error}), prompt=prompt)
        raise UpstreamBadResponse(f"the model failed mid-answer: {detail}")
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
    listed = [item.get("id") for item in items if isinstance(item, dict)]
    # An id may be any JSON value, a list or an object among them: only text is compared.
    texts = [i for i in listed if isinstance(i, str)]
    names = set(texts)
    valid = sorted(i for i in names if MODEL_NAME.fullmatch(i))
    rejected = len(listed) - len(texts) + len(names) - min(len(valid), MAX_MODELS)
    if rejected:
        log.warning(
            "upstream_value_rejected",
            field="models",
            reason=f"ids that are not 1-128 printable ASCII characters, or past {MAX_MODELS}",
            rejected=rejected,
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


ERROR_TOO_LONG = "an error too long to pass on"


def error_message(raw: bytes, *, prompt: Sequence[str] = (), cut: bool = False) -> str:
    """The upstream's error as it is passed on: its type or code and its message, bounded,
    with the prompt cut out and secrets and personal data masked.

    An upstream may quote the request in its error ("... in message 'my card is ...'"):
    that text is the customer's, and it would reach logs, Sentry and the client's error.
    A body read only in part (`cut`) that does not parse is not passed on at all: its
    escaped text would hide a quote from the prompt's comparison.
    """
    if not raw:
        return ""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if cut:
            return ERROR_TOO_LONG
        return _passed_on(raw.decode(errors="replace"), prompt)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            return _passed_on(message, prompt, kind=error.get("type"), code=error.get("code"))
        if isinstance(error, str):
            return _passed_on(error, prompt)
        if body.get("message"):
            return _passed_on(str(body["message"]), prompt, kind=body.get("type"))
    return _passed_on(raw.decode(errors="replace"), prompt)


# Shorter common runs are words any sentence may share with the prompt ("the model").
_ECHO_MIN = 12
_PROMPT_MASK = "[prompt]"
_ECHO_SPAN = b"\x01" * _ECHO_MIN
_QUOTED = re.compile(rb"\x01+")
_KIND = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _passed_on(message: str, prompt: Sequence[str], *, kind: Any = None, code: Any = None) -> str:
    # Cut the prompt out before bounding: a bound may cut an echo to a piece too short to
    # recognise. An upstream's message longer than this is not worth scanning.
    text = without_prompt(message.strip()[: MESSAGE_LIMIT * 4], prompt)
    text = redact(text)[:MESSAGE_LIMIT]
    labels = [str(v) for v in (kind, code) if isinstance(v, str | int) and _KIND.fullmatch(str(v))]
    return f"{'/'.join(labels)}: {text}" if labels and text else text or "/".join(labels)


def without_prompt(text: str, prompt: Sequence[str]) -> str:
    """The text with every part of the prompt it quotes masked: whole messages, and runs of
    at least _ECHO_MIN characters (an echo may be cut short or have its start dropped)."""
    parts = {p.strip() for p in prompt} - {""}
    quoted = bytearray(len(text))  # 1 where the text quotes the prompt
    # A message too short to tell from ordinary words is masked where it is quoted whole.
    for part in parts:
        if len(part) < _ECHO_MIN:
            start = text.find(part)
            while start != -1:
                quoted[start : start + len(part)] = b"\x01" * len(part)
                start = text.find(part, start + 1)
    # A run of _ECHO_MIN characters or more is a run of windows of that length each found
    # in the prompt: one pass over the prompt and one over the text, whatever either holds
    # (comparing them pairwise took seconds on a long conversation and a repetitive error).
    windows = {text[i : i + _ECHO_MIN] for i in range(len(text) - _ECHO_MIN + 1)}
    found: set[str] = set()
    for part in parts:
        if len(part) >= _ECHO_MIN and len(found) < len(windows):
            found.update(
                windows.intersection(
                    part[i : i + _ECHO_MIN] for i in range(len(part) - _ECHO_MIN + 1)
                )
            )
    if found:
        for i in range(len(text) - _ECHO_MIN + 1):
            if text[i : i + _ECHO_MIN] in found:
                quoted[i : i + _ECHO_MIN] = _ECHO_SPAN
    pieces: list[str] = []
    kept = 0
    for span in _QUOTED.finditer(quoted):
        pieces += (text[kept : span.start()], _PROMPT_MASK)
        kept = span.end()
    return "".join(pieces) + text[kept:] if pieces else text


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


def unreachable(exc: BaseException, connect_timeout_s: float) -> str:
    """What went wrong reaching the model server, in words: its host unknown, the
    connection refused or not answered in time, TLS failed. Without its address: the words
    reach API clients, the address only the logs."""
    chain = _causes(exc)
    if any(isinstance(e, (aiohttp.ClientConnectorDNSError, socket.gaierror)) for e in chain):
        return "the model server's host could not be found"
    if any(
        isinstance(e, ConnectionRefusedError)
        or (isinstance(e, OSError) and e.errno == errno.ECONNREFUSED)
        for e in chain
    ):
        return "the model server refused the connection"
    if any(isinstance(e, (aiohttp.ClientSSLError, ssl.SSLError)) for e in chain):
        return "the TLS handshake with the model server failed"
    if any(isinstance(e, (ConnectionResetError, aiohttp.ServerDisconnectedError)) for e in chain):
        return "the model server closed the connection"
    if any(isinstance(e, (TimeoutError, aiohttp.ConnectionTimeoutError)) for e in chain) or (
        len(chain) == 1 and isinstance(exc, httpx.ConnectTimeout)
    ):
        return f"the model server did not answer within {connect_timeout_s:g} s"
    return f"the model server could not be reached ({type(chain[-1]).__name__})"


def choices_of(event: dict[str, Any]) -> list[dict[str, Any]]:
    choices = event.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise UpstreamBadResponse("the model sent an unexpected event")
    return choices


async def error_body(response: httpx.Response, deadline: float) -> tuple[bytes, bool]:
    """The start of an error response's body, at most MAX_ERROR_BODY_BYTES (an error
    worth reading says what it has to say in its first lines), and whether it was cut."""
    body = bytearray()
    try:
        async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
            async for data in response.aiter_bytes():
                body += data
                if len(body) >= MAX_ERROR_BODY_BYTES:
                    break
    except (TimeoutError, *CLIENT_ERRORS):
        pass  # what arrived is all there is
    finally:
        await response.aclose()
    return bytes(body[:MAX_ERROR_BODY_BYTES]), len(body) >= MAX_ERROR_BODY_BYTES


async def next_read(reads: AsyncIterator[bytes], deadline: float) -> bytes:
    try:
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            return await anext(reads)
    except TimeoutError:
        raise UpstreamTimeout("the model took too long to answer") from None
