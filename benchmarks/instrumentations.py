"""What a span costs, and OpenTelemetry's official instrumentations against chatlens's spans.

In this process, on the stock SDK (a parent-based always-on sampler, a BatchSpanProcessor
whose exporter discards), each case timed as the best of five rounds of a few thousand
calls, in µs of CPU per call:

- the floor: one SDK span started and ended, sampled and not (its parent unsampled);
- an HTTP client call through a transport that answers at once: bare, with chatlens's
  `HttpClientSpan`, and through `opentelemetry-instrumentation-httpx`'s transport;
- a transaction of three statements on SQLite in memory (an UPDATE and two INSERTs, as a
  turn's answer writes): bare, with one span for the transaction (as chatlens makes them),
  with the same span from the engine's begin and commit events, and with
  `opentelemetry-instrumentation-sqlalchemy` (a span per statement, and one per
  connection);
- an HTTP request through an ASGI app that answers at once, behind chatlens's
  `ObservabilityMiddleware` (metrics and access log off): without a span, with its own
  server span, and with `opentelemetry-instrumentation-asgi`'s middleware making it (with
  and without its spans per ASGI message).

The difference to "bare" is what the span costs a call. The figures are of one machine and
one moment; their ratios are what docs/logging-standard.md quotes.

    .venv/bin/python -m benchmarks.instrumentations
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    update,
)
from sqlalchemy.pool import StaticPool

ROUNDS = 5


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    us_per_call: float


def _best(run: Callable[[int], None], calls: int) -> float:
    """µs of CPU per call, the best of ROUNDS rounds."""
    run(max(10, calls // 10))  # warm-up: caches, first-call imports
    times = []
    for _ in range(ROUNDS):
        started = time.process_time()
        run(calls)
        times.append((time.process_time() - started) / calls * 1e6)
    return min(times)


def _abest(make: Callable[[], Awaitable[None]], calls: int) -> float:
    def run(n: int) -> None:
        async def loop() -> None:
            for _ in range(n):
                await make()

        asyncio.run(loop())

    return _best(run, calls)


def span_floor(provider: TracerProvider) -> list[Case]:
    tracer = provider.get_tracer("bench")
    attributes = {"db.system.name": "sqlite", "db.namespace": "chatlens.db"}
    sampled = trace.set_span_in_context(tracer.start_span("parent"))
    unsampled = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(1, 2, is_remote=False, trace_flags=trace.TraceFlags(0))
        )
    )

    def child(context: Any) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                tracer.start_span("child", context, SpanKind.CLIENT, attributes).end()

        return run

    return [
        Case("SDK span", "sampled child, started and ended", _best(child(sampled), 20_000)),
        Case("SDK span", "unsampled child (parent not sampled)", _best(child(unsampled), 20_000)),
    ]


class _Instant(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, request=request)


def http_client(provider: TracerProvider) -> list[Case]:
    from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport

    from chatlens.observability import tracing

    url = httpx.URL("http://127.0.0.1:9/v1/chat/completions")
    bare = _Instant()
    official = AsyncOpenTelemetryTransport(_Instant(), tracer_provider=provider)
    parent = provider.get_tracer("bench").start_span("answer")
    token = trace.context_api.attach(trace.set_span_in_context(parent))

    async def plain() -> None:
        await bare.handle_async_request(httpx.Request("POST", url))

    async def ours() -> None:
        span = tracing.HttpClientSpan("POST", url)
        response = await bare.handle_async_request(httpx.Request("POST", url, headers=span.headers))
        span.finish(response.status_code)

    async def theirs() -> None:
        await official.handle_async_request(httpx.Request("POST", url))

    try:
        return [
            Case("HTTP client call", "bare", _abest(plain, 5_000)),
            Case("HTTP client call", "chatlens HttpClientSpan", _abest(ours, 5_000)),
            Case("HTTP client call", "opentelemetry-instrumentation-httpx", _abest(theirs, 5_000)),
        ]
    finally:
        trace.context_api.detach(token)


def database(provider: TracerProvider) -> list[Case]:
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    from chatlens.observability import tracing

    metadata = MetaData()
    table = Table("t", metadata, Column("id", Integer, primary_key=True), Column("v", String))
    # In memory: the file's fsync would drown what is measured.
    engine = create_engine("sqlite://", poolclass=StaticPool)
    metadata.create_all(engine)
    counter = iter(range(10**9))
    tracer = provider.get_tracer("bench")
    parent = trace.set_span_in_context(tracer.start_span("pipeline"))

    def transaction() -> None:
        with engine.begin() as connection:
            connection.execute(update(table).where(table.c.id == 0).values(v="x"))
            connection.execute(insert(table), {"id": next(counter) + 1, "v": "a"})
            connection.execute(insert(table), {"id": next(counter) + 1, "v": "b"})

    def plain(n: int) -> None:
        for _ in range(n):
            transaction()

    def ours(n: int) -> None:
        attributes = {
            "db.system.name": "sqlite",
            "db.namespace": "bench.db",
            "db.operation.name": "BATCH",
            "db.operation.batch.size": 3,
            "db.query.text": "UPDATE t ...;\nINSERT INTO t ...",
        }
        for _ in range(n):
            span = tracing.tracer(tracing.SQL_SCOPE).start_span(
                "BATCH bench.db", parent, SpanKind.CLIENT, attributes
            )
            transaction()
            span.end()

    spans: dict[int, trace.Span] = {}

    def began(connection: Any) -> None:
        spans[id(connection)] = tracing.tracer(tracing.SQL_SCOPE).start_span(
            "BATCH bench.db", None, SpanKind.CLIENT, {"db.system.name": "sqlite"}
        )

    def ended(connection: Any) -> None:
        span = spans.pop(id(connection), None)
        if span is not None:
            span.end()

    token = trace.context_api.attach(parent)
    try:
        cases = [
            Case("DB transaction, 3 statements", "bare", _best(plain, 2_000)),
            Case("DB transaction, 3 statements", "chatlens: one span", _best(ours, 2_000)),
        ]
        # The same span from the engine's begin/commit events: every statement then
        # dispatches SQLAlchemy's (empty) execution events as well.
        event.listen(engine, "begin", began)
        event.listen(engine, "commit", ended)
        event.listen(engine, "rollback", ended)
        try:
            cases.append(
                Case(
                    "DB transaction, 3 statements",
                    "one span from engine events (begin, commit)",
                    _best(plain, 2_000),
                )
            )
        finally:
            event.remove(engine, "begin", began)
            event.remove(engine, "commit", ended)
            event.remove(engine, "rollback", ended)
        instrumentor = SQLAlchemyInstrumentor()
        # It declares SQLAlchemy up to 2.0 and refuses 2.1 unless told to skip the check.
        instrumentor.instrument(engine=engine, tracer_provider=provider, skip_dep_check=True)
        try:
            cases.append(
                Case(
                    "DB transaction, 3 statements",
                    "opentelemetry-instrumentation-sqlalchemy",
                    _best(plain, 2_000),
                )
            )
        finally:
            instrumentor.uninstrument()
    finally:
        trace.context_api.detach(token)
        engine.dispose()
    return cases


def asgi(provider: TracerProvider) -> list[Case]:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from chatlens.observability.middleware import ObservabilityMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def ours(tracing_on: bool) -> Any:
        return ObservabilityMiddleware(
            app, routes=[], metrics=None, tracing=tracing_on, access_log=False
        )

    official = OpenTelemetryMiddleware(ours(False), tracer_provider=provider)
    official_lean = OpenTelemetryMiddleware(
        ours(False), tracer_provider=provider, exclude_spans=["receive", "send"]
    )

    def request(handler: Any) -> Callable[[], Awaitable[None]]:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(_: Any) -> None:
            return None

        async def one() -> None:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/chat",
                "raw_path": b"/chat",
                "root_path": "",
                "query_string": b"",
                "headers": [(b"host", b"bench"), (b"content-type", b"application/json")],
                "client": ("127.0.0.1", 5000),
                "server": ("127.0.0.1", 8000),
            }
            await handler(scope, receive, send)

        return one

    return [
        Case("ASGI request", "chatlens middleware, no span", _abest(request(ours(False)), 3_000)),
        Case(
            "ASGI request",
            "chatlens middleware, its server span",
            _abest(request(ours(True)), 3_000),
        ),
        Case(
            "ASGI request",
            "opentelemetry-instrumentation-asgi (send/receive spans excluded)",
            _abest(request(official_lean), 3_000),
        ),
        Case(
            "ASGI request",
            "opentelemetry-instrumentation-asgi (defaults)",
            _abest(request(official), 3_000),
        ),
    ]


def measure() -> list[Case]:
    from chatlens import __version__
    from chatlens.observability.tracing import configure_tracing

    provider = configure_tracing(
        service="bench", version=__version__, environment="test", otlp_endpoint=None
    )
    # Room for every span of a round: a full queue drops spans, which is cheaper than
    # exporting them and would flatter whatever makes many.
    provider.add_span_processor(BatchSpanProcessor(_Discard(), max_queue_size=1_000_000))
    cases = span_floor(provider)
    cases += http_client(provider)
    cases += database(provider)
    cases += asgi(provider)
    provider.shutdown()
    return cases


def main() -> int:
    print(
        "== instrumentations: µs of CPU per call in this process, best of "
        f"{ROUNDS} rounds; stock SDK, every span sampled, exporter discarding"
    )
    cases = measure()
    bare: dict[str, float] = {}
    for case in cases:
        extra = ""
        if case.name.startswith("bare") or case.name.endswith("no span"):
            bare[case.group] = case.us_per_call
        elif case.group in bare:
            extra = f"  (+{case.us_per_call - bare[case.group]:.1f} µs)"
        print(f"  {case.group:<30} {case.name:<66} {case.us_per_call:8.1f} µs{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
