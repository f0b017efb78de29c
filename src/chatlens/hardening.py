"""What browsers are told about every response: security headers, and CORS by a setting."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatlens.errors import error_body

# An API response is data, never a page: nothing may render, frame or cache it. Pages that
# need a policy of their own (the start page, the API docs) set their Content-Security-Policy,
# which is then kept; static files keep their caching.
DEFAULT_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
API_POLICY = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
NO_STORE = (b"cache-control", b"no-store")
_STATIC_PREFIX = "/static/"


class SecurityHeadersMiddleware:
    """Adds nosniff, no framing, no referrer, a strict CSP and no-store where not already set.

    Pure ASGI and precomputed: one pass over the response's headers, on the path the
    benchmarks measure.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(_STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                has_policy = has_cache = False
                for name, _ in headers:
                    if name == b"content-security-policy":
                        has_policy = True
                    elif name == b"cache-control":
                        has_cache = True
                headers.extend(DEFAULT_HEADERS)
                if not has_policy:
                    headers.append(API_POLICY)
                if not has_cache and not static:
                    headers.append(NO_STORE)
            await send(message)

        await self.app(scope, receive, send_with_headers)


# What a browser client of the API sends and may read back.
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_HEADERS = ("Authorization", "Content-Type", "X-Request-ID", "traceparent", "tracestate")
CORS_EXPOSED = ("X-Request-ID", "X-Trace-Id", "Retry-After")


class CorsMiddleware:
    """Starlette's CORS for the origins `CHATLENS_CORS_ALLOW_ORIGINS` names (none by default);
    a refused preflight is answered in chatlens's JSON error shape."""

    def __init__(self, app: ASGIApp, *, allow_origins: Sequence[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=allow_origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            expose_headers=CORS_EXPOSED,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Most requests come from no browser: without an Origin header there is nothing
        # for CORS to do, and Starlette's path (a Headers object, a send wrapper) costs
        # some 5 µs a request.
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, _ in scope["headers"]:
            if name == b"origin":
                break
        else:
            await self.app(scope, receive, send)
            return
        # Starlette answers a preflight itself, never passing it on: a refusal is its own
        # plain-text 400, rewritten on its way out.
        if scope["method"] == "OPTIONS" and any(
            name == b"access-control-request-method" for name, _ in scope["headers"]
        ):
            send = _refusal_in_json(send)
        await self.cors(scope, receive, send)


def _refusal_in_json(send: Send) -> Send:
    """`send` for a preflight: a plain-text 400 becomes `cors_preflight_refused` in JSON."""
    start: Message | None = None
    body = b""

    async def send_refusal_in_json(message: Message) -> None:
        nonlocal start, body
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            if message["status"] == 400 and any(
                name == b"content-type" and value.startswith(b"text/plain")
                for name, value in headers
            ):
                start = message
                return
        elif start is not None and message["type"] == "http.response.body":
            body += message.get("body", b"")
            if message.get("more_body", False):
                return
            await _send_refusal(send, start, body)
            return
        await send(message)

    return send_refusal_in_json


async def _send_refusal(send: Send, start: Message, text: bytes) -> None:
    # "Disallowed CORS origin, method": which part of the request the policy refused.
    reason = text.decode(errors="replace")
    message = reason.replace("Disallowed CORS", "CORS refuses this", 1)
    content = orjson.dumps(error_body("cors_preflight_refused", message))
    headers = [
        (name, value)
        for name, value in start.get("headers", [])
        if name.startswith(b"access-control-")
    ]
    headers += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    await send({"type": "http.response.start", "status": start["status"], "headers": headers})
    await send({"type": "http.response.body", "body": content})
