"""OpenTelemetry tracing: one provider per process, OTLP export when an endpoint is set."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

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
    # skip_dep_check: the instrumentation declares support up to SQLAlchemy 2.0 only, while
    # the engine events it uses are unchanged in 2.1 (the tests check that SQL spans appear).
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    # Client spans and an outgoing `traceparent` on every httpx call (upstream models,
    # auth services): the trace continues in whatever chatlens calls.
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    return provider


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
