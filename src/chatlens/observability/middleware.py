"""Pure-ASGI middleware: request ids and the last line of defence for unhandled errors."""

from __future__ import annotations

import re
import uuid

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatlens.observability.context import set_request_id

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Gives every request an id, echoes it, and turns an unhandled error into a JSON 500.

    Starlette's own 500 handler sits outside every user middleware, so its response would
    miss the X-Request-ID header; catching here keeps the header and the body's id in step.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _incoming_request_id(scope)
        set_request_id(request_id)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error("unhandled_exception", exc_info=exc, path=scope.get("path"))
            if started:
                # Headers are out; all that is left is to end the response uncleanly.
                raise
            body = orjson.dumps(
                {
                    "error": {
                        "type": "internal_error",
                        "message": "internal server error",
                        "request_id": request_id,
                    }
                }
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        header,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
