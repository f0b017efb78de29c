"""A fast OpenAI-compatible upstream for the relay benchmark: 20 chunks, no delays.

A bare ASGI app under uvicorn (no framework), so the upstream itself costs as little as
possible and what is measured is the relay in front of it.

    python -m benchmarks.fake_upstream --port 9000
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
import uvicorn

CHUNKS = 20
MODEL = "bench-model"
_WORDS = [f" word{i}" for i in range(CHUNKS)]
_USAGE = {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS}


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _stream_body() -> bytes:
    created = int(time.time())
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created}
    parts = [
        _event({**base, "model": MODEL, "choices": [{"index": 0, "delta": {"content": w}}]})
        for w in _WORDS
    ]
    parts.append(
        _event(
            {
                **base,
                "model": MODEL,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
        )
    )
    parts.append(_event({**base, "model": MODEL, "choices": [], "usage": _USAGE}))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


_STREAM = _stream_body()
_JSON = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(_WORDS)},
                "finish_reason": "stop",
            }
        ],
        "usage": _USAGE,
    }
)
_MODELS = orjson.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]})


async def read_body(receive: Any) -> bytes:
    """A request's whole body, from its ASGI messages."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    if scope["path"].endswith("/models"):
        await _reply(send, 200, b"application/json", _MODELS)
        return
    streamed = b'"stream":true' in body.replace(b" ", b"")
    if not streamed:
        await _reply(send, 200, b"application/json", _JSON)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    # Chunk by chunk, as a model streams (each its own write), without waiting between.
    events = _STREAM.split(b"\n\n")[:-1]
    for event in events:
        await send({"type": "http.response.body", "body": event + b"\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _reply(send: Any, status: int, content_type: bytes, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type)],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
