"""The floor of the relay benchmark: a relay that does nothing but relay.

A bare ASGI app under uvicorn (as `chatlens serve` runs it) that passes
`/v1/chat/completions` to the upstream through the HTTP stack the `openai` backend uses
(one httpx.AsyncClient over httpx-aiohttp's transport, requests sent straight to the
transport) and sends back what comes, streamed or not. No authentication, storage, logs,
metrics or traces: what it serves is as much as any relay on this stack can, on this
machine, and chatlens's figure is read against it.

    python -m benchmarks.bare_relay --port 9001 --upstream http://127.0.0.1:9000/v1
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import uvicorn
from httpx_aiohttp import AiohttpTransport

from benchmarks.fake_upstream import read_body

_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


def make_app(upstream: str) -> Any:
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=200))
    client = httpx.AsyncClient(transport=transport)
    url = httpx.URL(upstream.rstrip("/") + "/chat/completions")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = await read_body(receive)
        request = httpx.Request("POST", url, content=body, headers=_HEADERS)
        response = await transport.handle_async_request(request)
        content_type = response.headers.get("content-type", "application/json").encode()
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(b"content-type", content_type)],
            }
        )
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await response.aclose()
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
