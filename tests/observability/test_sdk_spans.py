"""chatlens's spans are the OpenTelemetry SDK's, made through its public API: the SDK's
sampler, processors and OTEL_* variables apply to them as to any other span."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler
from opentelemetry.trace import SpanKind

from chatlens.observability import tracing


class Recorder(SpanProcessor):
    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started.append(span.name)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


@pytest.fixture
def provider_of(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Make `tracing` use a provider of the test's own (made under the test's environment)."""
    made: list[TracerProvider] = []

    def install(sampler: Sampler | None = None) -> tuple[TracerProvider, Recorder]:
        provider = TracerProvider(sampler=sampler)
        recorder = Recorder()
        provider.add_span_processor(recorder)
        monkeypatch.setattr(tracing, "_provider", provider)
        monkeypatch.setattr(tracing, "_tracers", {})
        made.append(provider)
        return provider, recorder

    yield install
    for provider in made:
        provider.shutdown()


def test_start_span_makes_the_sdks_span_and_processors_see_it_start(provider_of: object) -> None:
    _, recorder = provider_of()  # type: ignore[operator]
    span = tracing.start_span(
        "chatlens.chat", "chat.pipeline", kind=SpanKind.INTERNAL, attributes={"a": 1}
    )
    assert isinstance(span, Span)
    assert recorder.started == ["chat.pipeline"]
    span.end()
    [ended] = recorder.ended
    assert ended.instrumentation_scope is not None
    assert ended.instrumentation_scope.name == "chatlens.chat"
    assert dict(ended.attributes or {}) == {"a": 1}


def test_no_spans_when_the_sdk_is_disabled(
    provider_of: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    _, recorder = provider_of()  # type: ignore[operator]
    span = tracing.start_span("chatlens.chat", "chat.pipeline", attributes={})
    assert not span.get_span_context().is_valid
    span.end()
    client = tracing.HttpClientSpan("GET", httpx.URL("http://127.0.0.1:9/x"))
    client.finish(200)
    assert "traceparent" not in client.headers
    assert recorder.started == [] and recorder.ended == []


def test_the_configured_sampler_decides(provider_of: object) -> None:
    _, recorder = provider_of(ParentBased(ALWAYS_OFF))  # type: ignore[operator]
    span = tracing.start_span("chatlens.http", "POST /chat", attributes={})
    assert span.get_span_context().is_valid  # ids still reach logs and rows
    assert not span.is_recording()
    child = tracing.start_span(
        "chatlens.chat", "chat.pipeline", attributes={}, context=trace.set_span_in_context(span)
    )
    assert not child.is_recording()
    assert child.get_span_context().trace_id == span.get_span_context().trace_id
    child.end()
    span.end()
    assert recorder.ended == []


def test_nothing_is_made_while_tracing_is_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_provider", None)
    span = tracing.start_span("chatlens.chat", "chat.pipeline", attributes={})
    assert not span.get_span_context().is_valid
    assert tracing.current_ids() == (None, None)
