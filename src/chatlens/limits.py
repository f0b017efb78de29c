"""Request body size limit, enforced before anything parses the body."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatlens.errors import error_body
from chatlens.observability.asgi import send_json


class BodySizeLimitMiddleware:
    """Answers 413 for bodies over the limit, by Content-Length or by counting a chunked body.

    A body without Content-Length is read here (at most the limit, plus one chunk) and
    replayed, because an error raised from inside receive() would be reported by the
    framework's body parser as a 400 instead.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await self._reject(send)
                    return
                await self.app(scope, receive, send)
                return

        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._reject(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        message = f"request body exceeds {self.max_bytes} bytes"
        await send_json(
            send, 413, error_body("payload_too_large", message), [(b"connection", b"close")]
        )
