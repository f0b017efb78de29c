"""OpenTelemetry tracing: one provider per process, OTLP export when an endpoint is set."""

from __future__ import annotations

from collections.abc import Callable
from time import time_ns
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue
from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.default import DefaultExecutionContext

_provider: TracerProvider | None = None


def configure_tracing(
    *,
    service: str,
    version: str,
    environment: str,
    otlp_endpoint: str | None,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install the process's tracer provider (once; later calls return the same one).

    The sampler, resource attributes and OTLP endpoint/headers follow the standard OTEL_*
    variables, read by the SDK itself. Without an exporter spans are still made, so trace
    ids reach logs, headers and stored messages.
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
    provider = TracerProvider(resource=resource)
    if exporter is None and otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    global _leaves
    _leaves = _LeafRecorder(provider)
    # SQL spans for every engine created from now on (the wrapper is process-wide).
    _instrument_sql()
    # Client spans and an outgoing `traceparent` on every httpx call (upstream models,
    # auth services): the trace continues in whatever chatlens calls.
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    return provider


class _LeafRecorder:
    """Hands finished leaf spans to the provider's span processors.

    A span without children need not exist while it runs: the SDK's `Span` (a lock, bounded
    attribute and event collections, a sampler call, then a `ReadableSpan` copy at its end)
    costs about 170,000 instructions, four to five times the `ReadableSpan` made here once
    the work is done, and a chat turn has eight such spans (its SQL statements and intent
    detection). The result is the span the SDK would export: same ids, parent, resource,
    scope, kind, times and attributes, the attribute length limit of `OTEL_*` applied.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self.resource = provider.resource
        self.id_generator = provider.id_generator
        # All of the provider's processors, those added later included (tests add theirs).
        self.processor: SpanProcessor | None = getattr(provider, "_active_span_processor", None)
        self.max_length = SpanLimits().max_attribute_length
        self.scopes: dict[str, InstrumentationScope] = {}
        self.tracers: dict[str, trace.Tracer] = {}
        self.provider = provider

    def tracer(self, scope: str) -> trace.Tracer:
        tracer = self.tracers.get(scope)
        if tracer is None:
            tracer = self.tracers.setdefault(scope, self.provider.get_tracer(scope))
        return tracer

    def record(
        self,
        parent: SpanContext,
        scope: str,
        name: str,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        start: int,
        end: int,
    ) -> None:
        assert self.processor is not None
        instrumentation = self.scopes.get(scope)
        if instrumentation is None:
            instrumentation = self.scopes.setdefault(scope, InstrumentationScope(scope))
        if self.max_length is not None:
            limit = self.max_length
            attributes = {
                key: value[:limit] if isinstance(value, str) else value
                for key, value in attributes.items()
            }
        context = SpanContext(
            parent.trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=parent.trace_flags,
            trace_state=parent.trace_state,
        )
        self.processor.on_end(
            ReadableSpan(
                name,
                context=context,
                parent=parent,
                resource=self.resource,
                attributes=attributes,
                kind=kind,
                instrumentation_scope=instrumentation,
                start_time=start,
                end_time=end,
            )
        )


_leaves: _LeafRecorder | None = None


class leaf_span:  # noqa: N801  (used like a function: `with leaf_span(...)`)
    """A span that has no children, made once its work is done (see `_LeafRecorder`).

    Under a sampled span of this process's SDK provider the finished span goes straight to
    the span processors; it follows its parent's sampling decision, as the default
    parent-based samplers do. A root span (no current span), a provider that is not the
    SDK's, or an exception takes the SDK's own path, where the exception is recorded as an
    event and sets the status.
    """

    __slots__ = ("attributes", "kind", "name", "scope", "start")

    def __init__(
        self,
        scope: str,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, AttributeValue],
    ) -> None:
        self.scope = scope
        self.name = name
        self.kind = kind
        self.attributes = attributes
        self.start = 0

    def __enter__(self) -> leaf_span:
        self.start = time_ns()
        return self

    def set_attributes(self, attributes: dict[str, AttributeValue]) -> None:
        self.attributes.update(attributes)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        recorder = _leaves
        if recorder is None:
            return  # tracing is off
        end = time_ns()
        parent_span = trace.get_current_span()
        parent = parent_span.get_span_context()
        if (
            error is None
            and recorder.processor is not None
            and parent.is_valid
            and parent_span.is_recording()
        ):
            if parent.trace_flags.sampled:
                recorder.record(
                    parent, self.scope, self.name, self.kind, self.attributes, self.start, end
                )
            return  # an unsampled parent: no span, as the SDK would decide
        span = recorder.tracer(self.scope).start_span(
            self.name,
            kind=self.kind,
            attributes=self.attributes,
            start_time=self.start,
            record_exception=False,
            set_status_on_exception=False,
        )
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end(end_time=end)


def _instrument_sql() -> None:
    """A client span per SQL statement, on every engine of the process.

    The dialect's execute hooks, instead of opentelemetry-instrumentation-sqlalchemy or the
    connection's cursor events: measured on a POST /chat turn, that package added 1.7 ms,
    and any connection event makes SQLAlchemy dispatch a dozen empty events per statement
    and join event collections on every new connection. Dialect hooks cost neither, for
    spans with the same semantic conventions (db.system.name, db.namespace,
    db.operation.name, db.query.text).
    """
    if not event.contains(Dialect, "do_execute", _do_execute):
        event.listen(Dialect, "do_execute", _do_execute)
        event.listen(Dialect, "do_executemany", _do_executemany)
        event.listen(Dialect, "do_execute_no_params", _do_execute_no_params)


# (dialect name, database) -> (namespace, constant span attributes), per engine URL.
_sql_targets: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}


def _sql_span(statement: str, context: DefaultExecutionContext) -> leaf_span:
    dialect = context.dialect
    database = context.root_connection.engine.url.database or ""
    target = _sql_targets.get((dialect.name, database))
    if target is None:
        namespace = database.rsplit("/", 1)[-1]
        attributes = {"db.system.name": dialect.name, "db.namespace": namespace}
        target = _sql_targets.setdefault((dialect.name, database), (namespace, attributes))
    namespace, constant = target
    operation = statement.lstrip().split(None, 1)[0].upper() if statement else "SQL"
    return leaf_span(
        "chatlens.sql",
        f"{operation} {namespace}" if namespace else operation,
        kind=SpanKind.CLIENT,
        attributes={**constant, "db.operation.name": operation, "db.query.text": statement},
    )


def _traced(span: leaf_span, run: Callable[[], None]) -> bool:
    with span:
        run()
    return True  # executed here: SQLAlchemy does not run the statement again


def _do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    if not isinstance(context, DefaultExecutionContext):
        return False  # a special-case execution without a context: left untraced
    dialect = context.dialect
    return _traced(
        _sql_span(statement, context),
        lambda: dialect.do_execute(cursor, statement, parameters, context),
    )


def _do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    if not isinstance(context, DefaultExecutionContext):
        return False
    dialect = context.dialect
    return _traced(
        _sql_span(statement, context),
        lambda: dialect.do_executemany(cursor, statement, parameters, context),
    )


def _do_execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
    if not isinstance(context, DefaultExecutionContext):
        return False
    dialect = context.dialect
    return _traced(
        _sql_span(statement, context),
        lambda: dialect.do_execute_no_params(cursor, statement, context),
    )


def tracer_provider() -> TracerProvider | None:
    return _provider


def shutdown_tracing() -> None:
    """Flush and stop exporting (uvicorn re-raises SIGTERM, so the lifespan calls this)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)


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
