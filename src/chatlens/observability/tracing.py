"""OpenTelemetry tracing on the stock SDK: one provider per process, OTLP export when an
endpoint is set.

Every span is the SDK's own, made through its public API (`Tracer.start_span`), so the
configured sampler decides, span processors see `on_start` and `on_end` (sentry-sdk's,
batching, OTLP), and `OTEL_*` variables (sampler, limits, `OTEL_SDK_DISABLED`) apply as
the SDK reads them. What is kept cheap is the number of spans: a turn has one per
transaction, not per statement, and none for work that can neither fail nor wait
(docs/logging-standard.md lists them, benchmarks/README.md what they cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes, AttributeValue
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from chatlens.observability.redaction import redact

_provider: TracerProvider | None = None
_tracers: dict[str, trace.Tracer] = {}

# The instrumentation scope of database spans.
SQL_SCOPE = "chatlens.sql"


def configure_tracing(
    *,
    service: str,
    version: str,
    environment: str,
    otlp_endpoint: str | None,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install the process's tracer provider (once; later calls return the same one).

    The sampler, limits, resource attributes and OTLP endpoint/headers follow the standard
    OTEL_* variables, read by the SDK itself (`OTEL_SDK_DISABLED=true` included: its
    tracers then make no spans). Without an exporter spans are still made, so trace ids
    reach logs, headers and stored messages.
    """
    global _provider
    if _provider is not None:
        return _provider
    resource = Resource.create(
        {
            "service.name": service,
            "service.version": version,
            "deployment.environment": environment,
            "deployment.environment.name": environment,
        }
    )
    existing = trace.get_tracer_provider()
    if isinstance(existing, TracerProvider):
        # An SDK provider installed before ours (sentry-sdk's OTLP integration makes one):
        # the process has one, and every processor on it sees our spans too.
        provider = existing
    else:
        provider = TracerProvider(resource=resource)
        trace.set_tracer_provider(provider)
    if exporter is None and otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(RedactingExporter(exporter)))
    _provider = provider
    _tracers.clear()
    # A span per session transaction, for every session made from now on.
    _instrument_sessions()
    return provider


class RedactingExporter(SpanExporter):
    """Spans masked as they leave the process, like log lines: attribute values (a raw
    `url.path`), event attributes (a recorded exception's message and stack) and status
    descriptions. Done on the exporter's thread, in batches, not on the request's path."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([_redacted(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _redacted(span: ReadableSpan) -> ReadableSpan:
    status = span.status
    if status.description:
        status = Status(status.status_code, redact(status.description))
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_redacted_attributes(span.attributes),
        events=[
            Event(event.name, _redacted_attributes(event.attributes), event.timestamp)
            for event in span.events
        ],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _redacted_attributes(attributes: Attributes) -> dict[str, AttributeValue]:
    masked: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if isinstance(value, str) and not key.endswith("id"):
            masked[key] = redact(value)
        elif isinstance(value, tuple | list) and value and isinstance(value[0], str):
            masked[key] = tuple(redact(str(item)) for item in value)
        else:
            masked[key] = value
    return masked


def shutdown_tracing() -> None:
    """Flush and stop exporting (uvicorn re-raises SIGTERM, so the lifespan calls this)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)


def tracer(scope: str) -> trace.Tracer:
    """The tracer of an instrumentation scope, from this process's provider."""
    found = _tracers.get(scope)
    if found is None:
        provider = _provider if _provider is not None else trace.get_tracer_provider()
        found = _tracers.setdefault(scope, provider.get_tracer(scope))
    return found


def start_span(
    scope: str,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, AttributeValue],
    context: otel_context.Context | None = None,
    links: Sequence[Link] = (),
    start_time: int | None = None,
) -> trace.Span:
    """Start a span (not made current) under `context`'s span, or the current one: the
    SDK tracer's `start_span`. A non-recording span while tracing is not configured."""
    if _provider is None:
        return trace.INVALID_SPAN  # tracing is off (CHATLENS_TRACING_ENABLED=false)
    return tracer(scope).start_span(name, context, kind, attributes, links, start_time)


def format_trace_id(trace_id: int) -> str:
    return format(trace_id, "032x")


def format_span_id(span_id: int) -> str:
    return format(span_id, "016x")


def current_ids() -> tuple[str | None, str | None]:
    """The current span's (trace_id, span_id) as hex, or (None, None) outside a span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format_trace_id(context.trace_id), format_span_id(context.span_id)


def end_with_error(span: trace.Span, error: BaseException, end_time: int | None = None) -> None:
    """Record `error` on `span` (an `exception` event, ERROR status, `error.type`) and end it."""
    if span.is_recording():
        span.set_attribute("error.type", type(error).__qualname__)
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end(end_time)


class HttpClientSpan:
    """The client span of one outgoing HTTP call, under the current span, with the HTTP
    semantic conventions' attributes (those OpenTelemetry's httpx instrumentation records).
    Send `headers` with the call: they carry the span's `traceparent`, so the trace
    continues in the service called. End it with `finish` once the response's headers are
    in, or with `fail`."""

    __slots__ = ("headers", "span")

    def __init__(self, method: str, url: httpx.URL) -> None:
        self.span = start_span(
            "chatlens.http",
            method,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": method,
                "server.address": url.host,
                "server.port": url.port or (443 if url.scheme == "https" else 80),
                # Credentials never reach a span; a URL is copied only when it holds some,
                # since a copy on every upstream call is not free.
                "url.full": str(
                    url.copy_with(username=None, password=None) if url.userinfo else url
                ),
            },
        )
        self.headers: dict[str, str] = {}
        inject(self.headers, context=trace.set_span_in_context(self.span))

    def finish(self, status: int) -> None:
        span = self.span
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            if status >= 400:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
        span.end()

    def fail(self, exc: BaseException) -> None:
        end_with_error(self.span, exc)


# -- database transactions ------------------------------------------------------------------

# Keys of our entries in Session.info and Connection.info (public dicts for extensions).
_SPAN_KEY = "chatlens.tracing.span"
_OPERATIONS_KEY = "chatlens.tracing.operations"


def db_namespace(database: str | None) -> str:
    """`db.namespace` of a database: the file name of an SQLite path, else the name."""
    return (database or "").rsplit("/", 1)[-1]


def db_operation(operations: Sequence[str]) -> str:
    """`db.operation.name` of a transaction's statements, as the conventions name batches:
    the one operation, `BATCH INSERT` when several share it, else `BATCH`."""
    if not operations:
        return "TRANSACTION"
    first = operations[0]
    if len(operations) == 1:
        return first
    return f"BATCH {first}" if all(op == first for op in operations) else "BATCH"


def db_span_name(operation: str, namespace: str) -> str:
    return f"{operation} {namespace}" if namespace else operation


def statement_operation(statement: Any) -> str:
    """SELECT, INSERT, UPDATE or DELETE from a statement's own flags; else its first word."""
    if getattr(statement, "is_insert", False):
        return "INSERT"
    if getattr(statement, "is_update", False):
        return "UPDATE"
    if getattr(statement, "is_delete", False):
        return "DELETE"
    if getattr(statement, "is_select", False):
        return "SELECT"
    words = str(statement).split(None, 1)
    return words[0].upper() if words else "SQL"


def _instrument_sessions() -> None:
    """A CLIENT span per session transaction, on every session of the process.

    Session events fire once per transaction (and once per statement run through
    `Session.execute`, to name its operations), where engine or connection events would
    make SQLAlchemy dispatch its execution events on every statement; the figures are in
    docs/logging-standard.md. A failing statement records its error on the span (the
    dialect's `handle_error`, which fires on errors only).
    """
    if event.contains(Session, "after_begin", _session_began):
        return
    event.listen(Session, "after_begin", _session_began)
    event.listen(Session, "do_orm_execute", _session_executes)
    event.listen(Session, "after_transaction_end", _session_ended)
    event.listen(Engine, "handle_error", _statement_failed)


def _session_began(
    session: Session, transaction: SessionTransaction, connection: Connection
) -> None:
    if _provider is None or _SPAN_KEY in session.info:
        return
    dialect = connection.dialect.name
    namespace = db_namespace(connection.engine.url.database)
    span = tracer(SQL_SCOPE).start_span(
        db_span_name("TRANSACTION", namespace),
        kind=SpanKind.CLIENT,
        attributes={"db.system.name": dialect, "db.namespace": namespace},
    )
    info = connection.info
    info[_SPAN_KEY] = span  # for a failing statement's error
    session.info[_SPAN_KEY] = (span, info, namespace)


def _session_executes(state: ORMExecuteState) -> None:
    # Before the statement: the transaction (and its span) may begin with it.
    if _provider is not None:
        info = state.session.info
        operations = info.get(_OPERATIONS_KEY)
        if operations is None:
            operations = info[_OPERATIONS_KEY] = []
        operations.append(statement_operation(state.statement))


def _session_ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return  # a savepoint, or a subtransaction: the root's span goes on
    begun = session.info.pop(_SPAN_KEY, None)
    operations: list[str] = session.info.pop(_OPERATIONS_KEY, None) or []
    if begun is None:
        return
    span, connection_info, namespace = begun
    if connection_info.get(_SPAN_KEY) is span:
        del connection_info[_SPAN_KEY]
    if span.is_recording():
        operation = db_operation(operations)
        span.update_name(db_span_name(operation, namespace))
        attributes: dict[str, AttributeValue] = {"db.operation.name": operation}
        if len(operations) > 1:
            attributes["db.operation.batch.size"] = len(operations)
            attributes["chatlens.db.operations"] = tuple(operations)
        span.set_attributes(attributes)
    span.end()


def _statement_failed(context: ExceptionContext) -> None:
    connection = context.connection
    if connection is None or connection.closed:
        return
    span = connection.info.get(_SPAN_KEY)
    if span is None or not span.is_recording():
        return
    error = context.original_exception
    span.set_attribute("db.query.text", context.statement or "")
    span.set_attribute("error.type", type(error).__qualname__)
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
