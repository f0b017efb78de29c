"""OpenTelemetry tracing: one provider per process, OTLP export when an endpoint is set."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from time import time_ns
from types import TracebackType
from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.propagate import inject
from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes, AttributeValue
from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.default import DefaultExecutionContext

_provider: TracerProvider | None = None
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_PLAIN_TYPES = frozenset({bool, int, float})


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
    global _recorder
    _recorder = _Recorder.create(provider)
    # SQL spans for every engine created from now on (the wrapper is process-wide).
    _instrument_sql()
    return provider


class _Recorder:
    """Makes this process's own spans and hands them, finished, to the span processors.

    The SDK's `Span` is costly: a lock, bounded attribute and event collections, attribute
    validation, and a `ReadableSpan` copy at its end. A chat turn makes nine or ten spans,
    and at that price tracing was a large share of its CPU (benchmarks/README.md). Here a
    span is a plain object while it runs (`_Span`), or nothing at all when it has no
    children (`leaf_span`), and becomes the SDK's `ReadableSpan` when it ends: the same ids,
    parent, resource, scope, kind, times, attributes, events and status the SDK would
    export, under the same `OTEL_*_LIMIT` variables. The SDK still does the rest: the
    sampler decides, its id generator makes the ids, and its processors and exporters
    (batching, OTLP) take the finished spans.
    Processors' `on_start` is not called: the SDK's own processors do nothing there.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.resource = provider.resource
        self.id_generator = provider.id_generator
        self.sampler = provider.sampler
        # A child of a sampled local span is sampled, of an unsampled one dropped: what the
        # parent-based samplers of OTEL_TRACES_SAMPLER (the default among them) do with
        # their default delegates. Leaves skip the sampler call only then.
        self.parent_based = isinstance(provider.sampler, ParentBased) and (
            "localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler"
            in provider.sampler.get_description()  # type: ignore[no-untyped-call]
        )
        # All of the provider's processors, those added later included (tests add theirs).
        self.processor: SpanProcessor = provider._active_span_processor
        # The OTEL_*_LIMIT variables, as the SDK's spans read them.
        self.limits = SpanLimits()
        self.max_length = self.limits.max_span_attribute_length
        self.scopes: dict[str, InstrumentationScope] = {}
        self.tracers: dict[str, trace.Tracer] = {}

    def local_child(self, parent: SpanContext) -> SpanContext | None:
        """The context of a new child of `parent`, a span of this process, with the parent's
        sampling decision: what a parent-based sampler with its default delegates decides,
        without the call. None when the sampler must decide (a root, a remote parent, or
        another sampler)."""
        if not (self.parent_based and parent.is_valid) or parent.is_remote:
            return None
        return SpanContext(
            parent.trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=parent.trace_flags,
            trace_state=parent.trace_state,
        )

    @classmethod
    def create(cls, provider: TracerProvider) -> _Recorder | None:
        """The provider's recorder; None (no spans) under OTEL_SDK_DISABLED=true, where
        the SDK hands out no-op tracers."""
        if os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
            return None
        return cls(provider)

    def tracer(self, scope: str) -> trace.Tracer:
        tracer = self.tracers.get(scope)
        if tracer is None:
            tracer = self.tracers.setdefault(scope, self.provider.get_tracer(scope))
        return tracer

    def scope(self, name: str) -> InstrumentationScope:
        scope = self.scopes.get(name)
        if scope is None:
            # The SDK tracer's own scope, so that an exporter groups our spans and the SDK's
            # of one scope together (their version is "", not None).
            sdk_scope = getattr(self.tracer(name), "_instrumentation_scope", None)
            if not isinstance(sdk_scope, InstrumentationScope):
                sdk_scope = InstrumentationScope(name, "")
            scope = self.scopes.setdefault(name, sdk_scope)
        return scope

    def _within_limits(self, attributes: dict[str, AttributeValue]) -> bool:
        """Whether the SDK's rules would leave these attributes as they are: few enough,
        string keys, and strings (alone or in tuples) within the length limit, or numbers
        and booleans. The usual case, checked for a fraction of BoundedAttributes' cost."""
        most = self.limits.max_span_attributes
        if most is not None and len(attributes) > most:
            return False
        limit = self.max_length
        for key, value in attributes.items():
            if type(key) is not str or not key:
                return False
            kind = type(value)
            if kind is str:
                if limit is not None and len(value) > limit:  # type: ignore[arg-type]
                    return False
            elif kind is tuple:
                for item in value:  # type: ignore[union-attr]
                    if type(item) is not str or (limit is not None and len(item) > limit):
                        return False
            elif kind not in _PLAIN_TYPES:
                return False
        return True

    def emit(
        self,
        *,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        scope: str,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
        start: int,
        end: int,
        events: Sequence[Event] = (),
        status: Status = _UNSET,
    ) -> None:
        """Hand a finished span on, its attributes under the SDK's own rules (count and
        length limits, values of other types made strings) unless already within them."""
        span_attributes: Attributes = attributes
        if not self._within_limits(attributes):
            span_attributes = BoundedAttributes(
                self.limits.max_span_attributes,
                attributes,
                immutable=True,
                max_value_len=self.max_length,
            )
        self.processor.on_end(
            ReadableSpan(
                name,
                context=context,
                parent=parent,
                resource=self.resource,
                attributes=span_attributes,
                events=events,
                kind=kind,
                instrumentation_scope=self.scope(scope),
                status=status,
                start_time=start,
                end_time=end,
            )
        )


_recorder: _Recorder | None = None


class _Span(trace.Span):
    """A recording span of this process: plain fields until `end()` hands it on."""

    def __init__(
        self,
        recorder: _Recorder,
        scope: str,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, AttributeValue],
    ) -> None:
        self._recorder = recorder
        self._scope = scope
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._events: BoundedList[Event] | None = None
        self._status = _UNSET
        self._start = time_ns()
        self._end: int | None = None

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end is None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._end is None:
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self._end is None:
            self._attributes.update(attributes)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end is None:
            limits = self._recorder.limits
            if self._events is None:
                self._events = BoundedList(limits.max_events)
            bounded = BoundedAttributes(
                limits.max_event_attributes,
                attributes,
                max_value_len=limits.max_attribute_length,
                immutable=True,
            )
            self._events.append(Event(name, bounded, timestamp))

    def update_name(self, name: str) -> None:
        if self._end is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: OK is final, UNSET changes nothing.
        if self._end is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # The SDK's own: it builds the exception.* attributes and calls add_event.
        SdkSpan.record_exception(self, exception, attributes, timestamp, escaped)  # type: ignore[arg-type]

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end = end_time if end_time is not None else time_ns()
        self._recorder.emit(
            name=self._name,
            context=self._context,
            parent=self._parent,
            scope=self._scope,
            kind=self._kind,
            attributes=self._attributes,
            start=self._start,
            end=end,
            events=self._events if self._events is not None else (),
            status=self._status,
        )


def start_span(
    scope: str,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, AttributeValue],
    context: otel_context.Context | None = None,
) -> trace.Span:
    """Start a span (not made current) under `context`'s span, or the current one.

    What the SDK's `Tracer.start_span` does, the same sampler deciding, for a span that
    costs a fifth as much (see `_Recorder`).
    """
    recorder = _recorder
    if recorder is None:
        return trace.INVALID_SPAN  # tracing is off
    current = trace.get_current_span(context).get_span_context()
    child = recorder.local_child(current)
    if child is not None:
        if not child.trace_flags.sampled:
            return trace.NonRecordingSpan(child)
        return _Span(recorder, scope, name, child, current, kind, dict(attributes))
    parent = current if current.is_valid else None
    ids = recorder.id_generator
    trace_id = parent.trace_id if parent is not None else ids.generate_trace_id()
    result = recorder.sampler.should_sample(context, trace_id, name, kind, attributes)
    flags = _SAMPLED if result.decision is Decision.RECORD_AND_SAMPLE else _NOT_SAMPLED
    random_trace_id = (
        parent.trace_flags.random_trace_id if parent is not None else ids.is_trace_id_random()
    )
    if random_trace_id:
        flags = TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID)
    span_context = SpanContext(
        trace_id,
        ids.generate_span_id(),
        is_remote=False,
        trace_flags=flags,
        trace_state=result.trace_state,
    )
    if result.decision is Decision.DROP:
        return trace.NonRecordingSpan(span_context)
    recorded = dict(result.attributes) if result.attributes else {}
    return _Span(recorder, scope, name, span_context, parent, kind, recorded)


class leaf_span:  # noqa: N801  (used like a function: `with leaf_span(...)`)
    """A span that has no children, made once its work is done (see `_Recorder`).

    Under a sampled span of this process's provider, with a parent-based sampler, the
    finished span goes straight to the span processors: nothing exists while it runs. A
    root span, another sampler, or an exception takes the SDK's own path, where the
    exception is recorded as an event and sets the status.
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
        recorder = _recorder
        if recorder is None:
            return  # tracing is off
        end = time_ns()
        parent = trace.get_current_span().get_span_context()
        child = recorder.local_child(parent) if error is None else None
        if child is not None:
            if child.trace_flags.sampled:
                recorder.emit(
                    name=self.name,
                    context=child,
                    parent=parent,
                    scope=self.scope,
                    kind=self.kind,
                    attributes=self.attributes,
                    start=self.start,
                    end=end,
                )
            return  # an unsampled parent: no span, as the sampler would decide
        span = recorder.tracer(self.scope).start_span(
            self.name,
            kind=self.kind,
            attributes=self.attributes,
            start_time=self.start,
            record_exception=False,
            set_status_on_exception=False,
        )
        if error is not None:  # as the SDK's `with` does: the exception escaped the span
            span.record_exception(error, escaped=True)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end(end_time=end)


def _instrument_sql() -> None:
    """A client span per SQL statement, on every engine of the process.

    The dialect's execute hooks, instead of opentelemetry-instrumentation-sqlalchemy or the
    connection's cursor events: that package made a POST /chat turn measurably slower
    (benchmarks/README.md), and any connection event makes SQLAlchemy dispatch a dozen empty
    events per statement and join event collections on every new connection. Dialect hooks
    cost neither, for spans with the same semantic conventions (db.system.name,
    db.namespace, db.operation.name, db.query.text).
    """
    if not event.contains(Dialect, "do_execute", _do_execute):
        event.listen(Dialect, "do_execute", _do_execute)
        event.listen(Dialect, "do_executemany", _do_executemany)
        event.listen(Dialect, "do_execute_no_params", _do_execute_no_params)


# (statement, dialect name, database) -> (span name, attributes but the query text). The
# statements a service runs are few and come back as the same strings, compiled once.
_sql_statements: dict[tuple[str, str, str], tuple[str, dict[str, AttributeValue]]] = {}


def _sql_span(statement: str, context: DefaultExecutionContext) -> leaf_span:
    dialect = context.dialect.name
    database = context.root_connection.engine.url.database or ""
    key = (statement, dialect, database)
    known = _sql_statements.get(key)
    if known is None:
        namespace = database.rsplit("/", 1)[-1]
        operation = statement.lstrip().split(None, 1)[0].upper() if statement else "SQL"
        known = (
            f"{operation} {namespace}" if namespace else operation,
            {"db.system.name": dialect, "db.namespace": namespace, "db.operation.name": operation},
        )
        if len(_sql_statements) < 4096:
            _sql_statements[key] = known
    name, constant = known
    return leaf_span(
        "chatlens.sql",
        name,
        kind=SpanKind.CLIENT,
        attributes={**constant, "db.query.text": statement},
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
    span = _sql_span(statement, context)
    if len(parameters) > 1:
        span.attributes["db.operation.batch.size"] = len(parameters)
    return _traced(span, lambda: dialect.do_executemany(cursor, statement, parameters, context))


def _do_execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
    if not isinstance(context, DefaultExecutionContext):
        return False
    dialect = context.dialect
    return _traced(
        _sql_span(statement, context),
        lambda: dialect.do_execute_no_params(cursor, statement, context),
    )


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


class HttpClientSpan:
    """The client span of one outgoing HTTP call, under the current span, with the HTTP
    semantic conventions' attributes (what OpenTelemetry's httpx instrumentation records,
    for a fraction of its cost). Send `headers` with the call: they carry the span's
    `traceparent`, so the trace continues in the service called. End it with `finish`
    once the response's headers are in, or with `fail`."""

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
        self.span.set_attribute("http.response.status_code", status)
        if status >= 400:
            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()

    def fail(self, exc: BaseException) -> None:
        self.span.set_attribute("error.type", type(exc).__qualname__)
        self.span.record_exception(exc)
        self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self.span.end()
