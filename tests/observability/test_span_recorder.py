"""chatlens's own spans are the spans the OpenTelemetry SDK would have made, sampler included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from chatlens.observability import tracing


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Install a recorder on a provider of the test's own, with the sampler it asks for."""
    made: list[tuple[TracerProvider, InMemorySpanExporter]] = []

    def install(sampler: Sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
        provider = TracerProvider(
            sampler=sampler, resource=Resource.create({"service.name": "chatlens"})
        )
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        monkeypatch.setattr(tracing, "_recorder", tracing._Recorder.create(provider))
        made.append((provider, exporter))
        return provider, exporter

    yield install
    for provider, _ in made:
        provider.shutdown()


def _tree(start: Any, leaf: Any, fail: bool) -> None:
    """A server span, a child that is current while a leaf runs under it, as chatlens does."""
    server = start("chatlens.http", "POST /chat", SpanKind.SERVER, {"http.route": "/chat"})
    token = otel_context.attach(trace.set_span_in_context(server))
    try:
        child = start("chatlens.chat", "chat.pipeline", SpanKind.INTERNAL, {"a": 1})
        inner = otel_context.attach(trace.set_span_in_context(child))
        try:
            with leaf("chatlens.sql", "SELECT db", SpanKind.CLIENT, {"db.query.text": "SELECT 1"}):
                pass
        finally:
            otel_context.detach(inner)
        child.set_attributes({"b": (1, 2), "c": "x"})
        if fail:
            error = ValueError("no such model")
            child.record_exception(error)
            child.set_status(Status(StatusCode.ERROR, "no such model"))
        child.end()
        server.set_attribute("http.response.status_code", 500 if fail else 200)
        server.set_status(StatusCode.ERROR if fail else StatusCode.UNSET)
    finally:
        otel_context.detach(token)
        server.end()


def _sdk_tree(provider: TracerProvider, fail: bool) -> None:
    def start(scope: str, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Any:
        return provider.get_tracer(scope).start_span(name, kind=kind, attributes=attributes)

    def leaf(scope: str, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Any:
        return provider.get_tracer(scope).start_as_current_span(
            name, kind=kind, attributes=attributes
        )

    _tree(start, leaf, fail)


def _own_tree(fail: bool) -> None:
    def start(scope: str, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Any:
        return tracing.start_span(scope, name, kind=kind, attributes=attributes)

    def leaf(scope: str, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Any:
        return tracing.leaf_span(scope, name, kind=kind, attributes=attributes)

    _tree(start, leaf, fail)


def _own_tree_called_with(traceparent: str) -> None:
    """The tree, made while a caller's trace context is the current one."""
    carrier = {"traceparent": traceparent}
    token = otel_context.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        _own_tree(fail=False)
    finally:
        otel_context.detach(token)


def _shape(spans: tuple[ReadableSpan, ...]) -> list[tuple[Any, ...]]:
    """What an exporter sees of a span tree, ids replaced by positions."""
    ids = {s.context.span_id: s.name for s in spans}
    (trace_id,) = {s.context.trace_id for s in spans}
    assert trace_id != 0
    return sorted(
        (
            s.name,
            s.kind,
            ids.get(s.parent.span_id) if s.parent else None,
            dict(s.attributes or {}),
            s.status.status_code,
            s.status.description,
            [(e.name, sorted((e.attributes or {}).keys())) for e in s.events],
            s.instrumentation_scope,
            dict(s.resource.attributes),
            int(s.context.trace_flags),  # sampled, and the random trace id flag
            s.start_time is not None and s.end_time is not None and 0 < s.start_time <= s.end_time,
        )
        for s in spans
    )


@pytest.mark.parametrize("fail", [False, True])
def test_own_spans_match_the_sdks(recorded: Any, fail: bool) -> None:
    provider, exporter = recorded(ParentBased(ALWAYS_ON))
    _sdk_tree(provider, fail)
    by_sdk = exporter.get_finished_spans()
    exporter.clear()
    _own_tree(fail)
    own = exporter.get_finished_spans()
    assert len(own) == 3
    assert _shape(own) == _shape(by_sdk)
    if fail:
        [pipeline] = [s for s in own if s.name == "chat.pipeline"]
        [event] = pipeline.events
        attributes = event.attributes or {}
        assert attributes["exception.type"] == "ValueError"
        assert "no such model" in str(attributes["exception.stacktrace"])


def test_the_configured_sampler_decides(recorded: Any) -> None:
    _, exporter = recorded(ALWAYS_OFF)
    _own_tree(fail=False)
    assert exporter.get_finished_spans() == ()

    # Parent-based: a caller that did not sample decides for the whole tree...
    _, exporter = recorded(ParentBased(ALWAYS_ON))
    _own_tree_called_with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
    assert exporter.get_finished_spans() == ()

    # ...and so does one that did: its trace is joined, its span is the parent.
    _own_tree_called_with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    assert {format(s.context.trace_id, "032x") for s in spans} == {
        "4bf92f3577b34da6a3ce929d0e0e4736"
    }
    [server] = [s for s in spans if s.name == "POST /chat"]
    assert server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == "00f067aa0ba902b7"


def test_an_ended_span_changes_no_more(recorded: Any) -> None:
    _, exporter = recorded(ParentBased(ALWAYS_ON))
    span = tracing.start_span("chatlens.chat", "chat.pipeline", attributes={"a": 1})
    assert span.is_recording()
    span.set_status(StatusCode.OK)
    span.set_status(Status(StatusCode.ERROR, "later"))  # OK is final, as in the SDK
    span.end()
    span.set_attribute("a", 2)
    span.end()
    assert not span.is_recording()
    [finished] = exporter.get_finished_spans()
    assert dict(finished.attributes or {}) == {"a": 1}
    assert finished.status.status_code is StatusCode.OK


def test_nothing_is_made_when_tracing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_recorder", None)
    span = tracing.start_span("chatlens.chat", "chat.pipeline", attributes={})
    assert not span.get_span_context().is_valid
    with tracing.leaf_span("chatlens.sql", "SELECT db", attributes={}):
        pass


def test_the_otel_limits_apply_as_to_the_sdks_spans(
    recorded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "5")
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "7")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3")
    provider, exporter = recorded(ParentBased(ALWAYS_ON))

    def tree(start: Any, leaf: Any) -> None:
        span = start("chatlens.chat", "chat.pipeline", {"a": "0123456789"})
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            with leaf("chatlens.sql", "SELECT db", {"db.query.text": "SELECT 1 FROM t"}):
                pass
        finally:
            otel_context.detach(token)
        span.set_attributes({"b": ["xy", "0123456789"], "c": 1, "d": 2})
        span.add_event("note", {"text": "0123456789"})
        span.end()

    tree(
        lambda scope, name, attributes: provider.get_tracer(scope).start_span(
            name, attributes=attributes
        ),
        lambda scope, name, attributes: provider.get_tracer(scope).start_as_current_span(
            name, attributes=attributes
        ),
    )
    by_sdk = exporter.get_finished_spans()
    exporter.clear()
    tree(
        lambda scope, name, attributes: tracing.start_span(scope, name, attributes=attributes),
        lambda scope, name, attributes: tracing.leaf_span(scope, name, attributes=attributes),
    )
    own = exporter.get_finished_spans()

    def seen(spans: tuple[ReadableSpan, ...]) -> list[Any]:
        return sorted(
            (
                s.name,
                dict(s.attributes or {}),
                s.dropped_attributes,
                [(e.name, dict(e.attributes or {})) for e in s.events],
            )
            for s in spans
        )

    assert seen(own) == seen(by_sdk)
    [pipeline] = [s for s in own if s.name == "chat.pipeline"]
    # The oldest attribute makes room, as in the SDK.
    assert dict(pipeline.attributes or {}) == {"b": ("xy", "01234"), "c": 1, "d": 2}
    assert pipeline.dropped_attributes == 1
    assert dict(pipeline.events[0].attributes or {}) == {"text": "0123456"}


def test_no_spans_when_the_sdk_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing._Recorder.create(TracerProvider()) is None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    assert tracing._Recorder.create(TracerProvider()) is not None
