"""What browsers are told about every response: security headers, and CORS by a setting."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatlens.errors import error_body

# An API response is data, never a page: nothing may render, frame or cache it. Pages that
# need a policy of their own (the start page, the API docs) set their Content-Security-Policy,
# which is then kept; static files keep their caching.
_DEFAULT_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_API_POLICY = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_NO_STORE = (b"cache-control", b"no-store")
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
                headers.extend(_DEFAULT_HEADERS)
                if not has_policy:
                    headers.append(_API_POLICY)
                if not has_cache and not static:
                    headers.append(_NO_STORE)
            await send(message)

        await self.app(scope, receive, send_with_headers)


# What a browser client of the API sends and may read back.
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_HEADERS = ("Authorization", "Content-Type", "X-Request-ID", "traceparent", "tracestate")
CORS_EXPOSED = ("X-Request-ID", "X-Trace-Id", "Retry-After")


class CorsMiddleware(CORSMiddleware):
    """Starlette's CORS for the origins `CHATLENS_CORS_ALLOW_ORIGINS` names (none by default);
    a refused preflight is answered in chatlens's JSON error shape."""

    def __init__(self, app: ASGIApp, *, allow_origins: Sequence[str]) -> None:
        super().__init__(
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
        if scope["type"] == "http":
            for name, _ in scope["headers"]:
                if name == b"origin":
                    break
            else:
                await self.app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        # "Disallowed CORS origin, method": which part of the request the policy refused.
        message = bytes(response.body).decode().replace("Disallowed CORS", "CORS refuses this")
        headers = {k: v for k, v in response.headers.items() if k.startswith("access-control-")}
        return Response(
            orjson.dumps(error_body("cors_preflight_refused", message)),
            status_code=response.status_code,
            headers=headers,
            media_type="application/json",
        )
