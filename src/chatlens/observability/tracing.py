"""OpenTelemetry tracing: one provider per process, OTLP export when an endpoint is set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
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
    # SQL spans for every engine created from now on (the wrapper is process-wide).
    _instrument_sql()
    # Client spans and an outgoing `traceparent` on every httpx call (upstream models,
    # auth services): the trace continues in whatever chatlens calls.
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    return provider


_sql_tracer = trace.get_tracer("chatlens.sql")


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


def _sql_span(statement: str, context: DefaultExecutionContext) -> Span:
    dialect = context.dialect
    database = context.root_connection.engine.url.database or ""
    target = _sql_targets.get((dialect.name, database))
    if target is None:
        namespace = database.rsplit("/", 1)[-1]
        attributes = {"db.system.name": dialect.name, "db.namespace": namespace}
        target = _sql_targets.setdefault((dialect.name, database), (namespace, attributes))
    namespace, constant = target
    operation = statement.lstrip().split(None, 1)[0].upper() if statement else "SQL"
    return _sql_tracer.start_span(
        f"{operation} {namespace}" if namespace else operation,
        kind=SpanKind.CLIENT,
        attributes={**constant, "db.operation.name": operation, "db.query.text": statement},
        record_exception=False,
        set_status_on_exception=False,
    )


def _traced(span: Span, run: Callable[[], None]) -> bool:
    try:
        run()
    except BaseException as error:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        span.end()
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
