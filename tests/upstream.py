"""A fake OpenAI-compatible upstream: a real HTTP server on 127.0.0.1, scenario by model name.

Models (the request's `model` picks the behaviour; `name:N` means "the first N calls"):
- `ok` — three words, then a usage chunk (11 prompt, 3 completion, 4 cached), `[DONE]`
- `no-usage` — three words and a finish reason, no usage chunk
- `slow-first:S` — headers at once, the first word after S seconds
- `slow-headers:S` — nothing at all for S seconds, then as `ok`
- `slow-words:S` — each word S seconds after the previous one
- `disconnect` — two words, then the connection is dropped
- `rate-limit:N` — 429 with `Retry-After: 0` for the first N calls, then as `ok`
- `fail:N` — 500 for the first N calls, then as `ok` (`fail` alone: always 500)
- `garbage` — a `data:` line that is not JSON
- `mid-error` — a word, then an OpenAI-style `{"error": ...}` event
- `too-long` — 400 with OpenAI's "maximum context length" error
- `*hostile*` — as `ok`, but every value out of bounds: a 300-character model name, a NUL
  in a word, a 1,000-character finish reason, usage of -5,000,000 prompt and 10^12
  completion tokens
- `huge` — three words of 100,000 characters each
- `echo:STATUS` — STATUS (400, 500, ...) with an error that quotes the last message, as
  some upstreams' content filters and validators do
- `long-line` — a `data:` line of 16 MiB that never ends: the connection stays open, silent,
  until the client leaves (at most 30 s)
- `huge-error` — 500 with a JSON error whose message is 32 MiB long
- `junk-after-done` — as `ok`, then 4 MiB without a newline after `[DONE]`
Every call is recorded (model and headers), so tests count retries and see `traceparent`.
GET /models lists MODELS, then `odd_ids` (ids a test sets that chatlens must refuse).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.asgi_server import serving
from tests.helpers import free_port

WORDS = ("Hello", " from", " upstream")
USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}
MODELS = (
    "ok",
    "no-usage",
    "gpt-4o-mini",
    "fail",
    "garbage",
    "slow-words:0.3",
    "slow-words:1.5",
    "slow-words:20",
)


def _chunk(model: str, **delta: Any) -> bytes:
    finish = delta.pop("finish_reason", None)
    event = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


HOSTILE_MODEL = "m" * 300
HOSTILE_USAGE = {"prompt_tokens": -5_000_000, "completion_tokens": 10**12}


async def _hostile() -> AsyncIterator[bytes]:
    for word in ("Hel\x00lo", " from", " upstream"):
        yield _chunk(HOSTILE_MODEL, content=word)
    yield _chunk(HOSTILE_MODEL, finish_reason="y" * 1000)
    event = {"id": "z" * 10_000, "model": HOSTILE_MODEL, "choices": [], "usage": HOSTILE_USAGE}
    yield b"data: " + orjson.dumps(event) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def _huge_error() -> AsyncIterator[bytes]:
    yield b'{"error": {"type": "server_error", "message": "'
    for _ in range(512):
        yield b"x" * 65_536
    yield b'"}}'


@dataclass
class Call:
    model: str
    headers: dict[str, str]
    body: dict[str, Any]
    client_port: int  # the same port twice: the relay reused its connection


@dataclass
class FakeUpstream:
    """Start with `with FakeUpstream() as upstream:`; `upstream.url` is the API root."""

    port: int = field(default_factory=free_port)
    calls: list[Call] = field(default_factory=list)
    odd_ids: list[Any] = field(default_factory=list)
    _counts: Counter[str] = field(default_factory=Counter)
    _serving: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def calls_to(self, model: str) -> int:
        return sum(1 for call in self.calls if call.model == model)

    def reset(self) -> None:
        self.calls.clear()
        self._counts.clear()

    # -- the app ---------------------------------------------------------------------------

    async def _models(self, _: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": m, "object": "model"} for m in (*MODELS, *self.odd_ids)],
            }
        )

    async def _completions(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        model = str(body.get("model"))
        port = request.client.port if request.client else 0
        self.calls.append(
            Call(model=model, headers=dict(request.headers), body=body, client_port=port)
        )
        self._counts[model] += 1
        name, _, arg = model.partition(":")
        count = self._counts[model]
        if name == "rate-limit" and count <= int(arg or 1):
            return JSONResponse(
                {"error": {"message": "Rate limit reached", "type": "rate_limit"}},
                status_code=429,
                headers={"Retry-After": "0"},
            )
        if name == "fail" and (not arg or count <= int(arg)):
            return JSONResponse({"error": {"message": "upstream exploded"}}, status_code=500)
        if name == "too-long":
            message = "This model's maximum context length is 8192 tokens."
            return JSONResponse(
                {"error": {"message": message, "type": "invalid_request_error"}},
                status_code=400,
            )
        if name == "echo":
            quoted = str(body["messages"][-1]["content"])
            message = f"Invalid content in messages[-1]: '{quoted}' (starts {quoted[:40]!r})"
            error = {"message": message, "type": "invalid_request_error", "code": "content_policy"}
            return JSONResponse({"error": error}, status_code=int(arg))
        if name == "huge-error":
            return StreamingResponse(_huge_error(), status_code=500, media_type="application/json")
        if name == "slow-headers":
            await asyncio.sleep(float(arg))
        return StreamingResponse(self._stream(model, name, arg), media_type="text/event-stream")

    async def _stream(self, model: str, name: str, arg: str) -> AsyncIterator[bytes]:
        if "hostile" in name:
            async for event in _hostile():
                yield event
            return
        if name == "huge":
            for _ in range(3):
                yield _chunk(model, content="x" * 100_000)
            yield _chunk(model, finish_reason="stop")
            yield b"data: [DONE]\n\n"
            return
        if name == "garbage":
            yield b"data: {this is not json\n\n"
            return
        if name == "long-line":
            yield b'data: {"choices": [{"delta": {"content": "'
            for _ in range(256):
                yield b"x" * 65_536
            await asyncio.sleep(30)
            return
        if name == "slow-first":
            yield b": waiting\n\n"
            await asyncio.sleep(float(arg))
        for index, word in enumerate(WORDS):
            if name == "slow-words" and index:
                await asyncio.sleep(float(arg))
            if name == "disconnect" and index == 2:
                raise ConnectionResetError("dropped by the fake upstream")
            if name == "mid-error" and index == 1:
                yield b"data: " + orjson.dumps({"error": {"message": "overloaded"}}) + b"\n\n"
                return
            yield _chunk(model, content=word)
        yield _chunk(model, finish_reason="stop")
        if name != "no-usage":
            event = {"id": "chatcmpl-fake", "model": model, "choices": [], "usage": USAGE}
            yield b"data: " + orjson.dumps(event) + b"\n\n"
        yield b"data: [DONE]\n\n"
        if name == "junk-after-done":
            for _ in range(64):
                yield b"x" * 65_536

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FakeUpstream:
        app = Starlette(
            routes=[
                Route("/v1/models", self._models),
                Route("/v1/chat/completions", self._completions, methods=["POST"]),
            ]
        )
        self._serving = serving(app, self.port)
        self._serving.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._serving.__exit__(None, None, None)
