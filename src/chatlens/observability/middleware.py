"""One pure-ASGI middleware: request id, server span, access log, HTTP metrics.

One layer instead of four, no BaseHTTPMiddleware, no per-chunk spans, metric children
bound once per (method, route): the lean path that keeps observability nearly free.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import routing as fastapi_routing
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.routing import BaseRoute, Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatlens.observability.asgi import send_json
from chatlens.observability.context import (
    end_request_id,
    end_verdict,
    set_request_id,
    start_verdict,
)
from chatlens.observability.logging import end_request, start_request
from chatlens.observability.metrics import UNMATCHED_ROUTE, Metrics
from chatlens.observability.request_stats import RequestStats
from chatlens.observability.tracing import start_span

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
TRACE_ID_HEADER = b"x-trace-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# Probes, scrapes and static files: logged at DEBUG, and not the traffic the SLA counts.
_QUIET_PREFIXES = ("/health", "/metrics", "/static/")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _request_id(scope: Scope) -> str:
    value = _header(scope, REQUEST_ID_HEADER)
    if value is not None and _VALID_REQUEST_ID.fullmatch(value):
        return value.decode("ascii")
    return uuid.uuid4().hex


class RouteTable:
    """Route templates for metric labels and span names, resolved before the app runs.

    Built once, on the first request, from the app's routes: matching a path against a few
    dozen compiled templates costs microseconds, and the label is known at the start, so
    the in-progress gauge and the span can carry it.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._routes = routes
        self._table: list[tuple[re.Pattern[str], str, frozenset[str] | None]] | None = None

    def _build(self) -> list[tuple[re.Pattern[str], str, frozenset[str] | None]]:
        contexts: Any = getattr(fastapi_routing, "iter_route_contexts", None)
        routes = list(contexts(self._routes)) if contexts is not None else list(self._routes)
        table = []
        for route in routes:
            path = getattr(route, "path", None)
            if not path:
                continue
            if isinstance(getattr(route, "original_route", route), Mount):
                # A mount serves everything below its path (the static files): one label.
                path = f"{path}/{{path:path}}"
            regex, _, _ = compile_path(path)
            methods = getattr(route, "methods", None)
            table.append((regex, path, frozenset(methods) if methods else None))
        return table

    def template(self, scope: Scope) -> str:
        if self._table is None:
            self._table = self._build()
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        method = scope["method"]
        partial = None
        for regex, template, methods in self._table:
            if regex.match(path):
                if methods is None or method in methods:
                    return template
                partial = partial or template  # a 405 still names the route
        return partial or UNMATCHED_ROUTE


class _Carrier(Getter[Scope]):
    """Headers of an ASGI scope as a getter for the W3C trace-context propagator."""

    def get(self, scope: Scope, key: str) -> list[str] | None:
        value = _header(scope, key.encode("latin-1"))
        return None if value is None else [value.decode("latin-1")]

    def keys(self, scope: Scope) -> list[str]:
        return [k.decode("latin-1") for k, _ in scope["headers"]]


_carrier = _Carrier()


class ObservabilityMiddleware:
    """Wraps every HTTP request in its id, span, metrics and access-log line."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[BaseRoute],
        metrics: Metrics | None,
        tracing: bool,
        access_log: bool,
        request_stats: RequestStats | None = None,
    ) -> None:
        self.app = app
        self.routes = RouteTable(routes)
        self.metrics = metrics
        self.request_stats = request_stats
        self.tracing = tracing
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        route = self.routes.template(scope)
        request_id = _request_id(scope)
        request_id_token = set_request_id(request_id)
        verdict, verdict_token = start_verdict()
        fields: dict[str, Any] = {"request_id": request_id, "method": method, "route": route}

        span = None
        token = None
        trace_id = None
        if self.tracing:
            parent = propagate.extract(scope, getter=_carrier)
            span = start_span(
                "chatlens.http",
                f"{method} {route}",
                context=parent,
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": method,
                    "http.route": route,
                    "url.path": path,
                    "url.scheme": scope.get("scheme", "http"),
                    "network.protocol.version": scope.get("http_version", "1.1"),
                },
            )
            token = otel_context.attach(trace.set_span_in_context(span))
            span_context = span.get_span_context()
            if span_context.is_valid:
                trace_id = format(span_context.trace_id, "032x")
                fields["trace_id"] = trace_id
                fields["span_id"] = format(span_context.span_id, "016x")
        fields_token = start_request(fields)

        metrics = self.metrics
        if metrics is not None:
            metrics.http_requests_in_progress.labels(method, route).inc()

        extra_headers = [(REQUEST_ID_HEADER, request_id.encode("ascii"))]
        if trace_id is not None:
            extra_headers.append((TRACE_ID_HEADER, trace_id.encode("ascii")))
        status = 500
        streaming = False
        response_started = False
        first_byte: float | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, streaming, first_byte, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = message.setdefault("headers", [])
                for name, value in headers:
                    if name == b"content-type" and value.startswith(b"text/event-stream"):
                        streaming = True
                        break
                headers.extend(extra_headers)
            elif message["type"] == "http.response.body" and first_byte is None:
                first_byte = time.perf_counter()
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception as exc:
                if span is not None:
                    span.record_exception(exc)
                log.error("unhandled_exception", exc_info=exc)
                if self.metrics is not None:
                    self.metrics.errors.labels(type(exc).__name__, _service_of(exc)).inc()
                if response_started:
                    raise  # headers are out; all that is left is to end the response
                await self._internal_error(send, request_id, extra_headers)
                status = 500
        finally:
            ended = time.perf_counter()
            # A stream's duration is up to its first byte: its length is the answer's.
            until = first_byte if streaming and first_byte is not None else ended
            if metrics is not None:
                metrics.http_requests_in_progress.labels(method, route).dec()
                metrics.http_requests.labels(method, route, str(status)).inc()
                exemplar = {"trace_id": trace_id} if trace_id is not None else None
                metrics.http_request_duration.labels(method, route).observe(
                    until - started, exemplar
                )
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
                if token is not None:
                    otel_context.detach(token)
            if self.request_stats is not None and not path.startswith(_QUIET_PREFIXES):
                # For the SLA: probes and scrapes are not the service's traffic; a stream
                # that failed after its 200 is the 5xx it would have been.
                failed = verdict.failed and status < 500
                self.request_stats.record(route, 500 if failed else status, until - started)
            try:
                if self.access_log:
                    self._log_access(scope, path, status, (ended - started) * 1000)
            finally:
                end_request(fields_token)
                end_request_id(request_id_token)
                end_verdict(verdict_token)

    def _log_access(self, scope: Scope, path: str, status: int, duration_ms: float) -> None:
        client = scope.get("client")
        agent = _header(scope, b"user-agent")
        emit = log.debug if path.startswith(_QUIET_PREFIXES) else log.info
        emit(
            "http_request",
            path=path,
            status=status,
            duration_ms=round(duration_ms, 3),
            client_ip=client[0] if client else None,
            user_agent=agent.decode("latin-1") if agent else None,
        )

    @staticmethod
    async def _internal_error(
        send: Send, request_id: str, extra_headers: list[tuple[bytes, bytes]]
    ) -> None:
        # Starlette's own 500 handler sits outside every middleware, so its response would
        # miss our headers; answering here keeps the header and the body's id in step.
        error = {"type": "internal_error", "message": "internal server error"}
        await send_json(send, 500, {"error": {**error, "request_id": request_id}}, extra_headers)


def _service_of(exc: BaseException) -> str:
    """Which part failed, for errors_total: the database, or the API itself."""
    module = type(exc).__module__
    if module.startswith(("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3")):
        return "db"
    return "api"
