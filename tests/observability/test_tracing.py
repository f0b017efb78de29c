"""Trace ids agree across header, logs, spans and the stored row; traceparent is honoured."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from chatlens import state
from chatlens.chat.pipeline import ChatPipeline
from chatlens.db.session import Database
from chatlens.models import Message
from chatlens.observability.tracing import configure_tracing

pytestmark = pytest.mark.asyncio

_exporter = InMemorySpanExporter()
_installed = False
# The ids of the spans whose start a span processor was told of (sentry-sdk's works there).
_started: list[int] = []


class _Starts(SpanProcessor):
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        _started.append(span.get_span_context().span_id)


@pytest.fixture
def spans(app: Any) -> Iterator[InMemorySpanExporter]:
    """Finished spans of this test, from the process's tracer provider."""
    global _installed
    if not _installed:
        provider = configure_tracing(
            service="chatlens", version="test", environment="test", otlp_endpoint=None
        )
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        provider.add_span_processor(_Starts())
        _installed = True
    _exporter.clear()
    _started.clear()
    yield _exporter
    _exporter.clear()
    _started.clear()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_header_spans_and_stored_rows_share_the_trace(
    client: httpx.AsyncClient, account: Any, sessionmaker: Any, spans: InMemorySpanExporter
) -> None:
    response = await client.post(
        "/chat", json={"message": "how do I reset my password"}, headers=account.headers
    )
    trace_id = response.headers["x-trace-id"]
    assert len(trace_id) == 32
    finished = spans.get_finished_spans()
    [server] = by_name(finished, "POST /chat")
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/chat"
    assert server.attributes["http.response.status_code"] == 200
    # A turn has no span of its own: the server span parents the model's and says which
    # conversation it served.
    assert not by_name(finished, "chat.pipeline")
    assert server.attributes["gen_ai.conversation.id"] == response.json()["conversation_id"]
    [model] = by_name(finished, "chat builtin-kb")
    assert model.parent is not None and model.parent.span_id == server.context.span_id
    attrs = model.attributes or {}
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "builtin"
    assert attrs["gen_ai.request.model"] == "builtin-kb"
    assert attrs["gen_ai.conversation.id"] == response.json()["conversation_id"]
    usage = response.json()["usage"]
    assert attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    # Intent detection can neither fail nor wait: no span, its outcome on the answer's.
    assert attrs["chatlens.intent"] == response.json()["intent"]
    assert 0 <= float(attrs["chatlens.intent.confidence"]) <= 1  # type: ignore[arg-type]
    assert all(s.context.trace_id == server.context.trace_id for s in finished)
    # A span per transaction, not per statement: the question's (conversation and
    # question), the answer's (conversation, answer, metrics row), and the API key's
    # lookup when it is not remembered.
    sql = [s for s in finished if (s.attributes or {}).get("db.system.name")]
    assert 2 <= len(sql) <= 3, [s.name for s in sql]
    writes = [s for s in sql if "INSERT" in str((s.attributes or {}).get("db.query.text"))]
    assert len(writes) == 2
    for span in sql:
        attributes = span.attributes or {}
        assert span.kind is SpanKind.CLIENT
        assert attributes["db.namespace"]
        assert span.name == f"{attributes['db.operation.name']} {attributes['db.namespace']}"
    assert {(s.attributes or {})["db.operation.name"] for s in writes} == {"BATCH INSERT", "BATCH"}
    assert all((s.attributes or {})["db.operation.batch.size"] >= 2 for s in writes)
    ids = {s.context.span_id for s in finished}
    assert all(s.parent is not None and s.parent.span_id in ids for s in sql)
    # Children lie within their parents' time.
    by_id = {s.context.span_id: s for s in finished}
    for child in [*sql, model]:
        assert child.parent is not None
        parent = by_id[child.parent.span_id]
        assert child.start_time is not None and child.end_time is not None
        assert parent.start_time is not None and parent.end_time is not None
        assert parent.start_time <= child.start_time <= child.end_time <= parent.end_time
        assert child.resource == server.resource
        assert child.context.trace_flags.sampled
    assert {s.context.span_id for s in finished} == by_id.keys()  # no id twice
    assert len(finished) <= 5  # server, model, and the transactions

    async with sessionmaker() as session:
        query = select(Message).where(
            Message.conversation_id == uuid.UUID(response.json()["conversation_id"])
        )
        rows = (await session.scalars(query)).all()
    assert {(m.trace_id, m.span_id) for m in rows} == {
        (trace_id, format(server.context.span_id, "016x"))
    }


async def _chat_under(client: httpx.AsyncClient, account: Any, traceparent: str) -> httpx.Response:
    return await client.post(
        "/chat",
        json={"message": "how do I reset my password"},
        headers={**account.headers, "traceparent": traceparent},
    )


async def test_incoming_traceparent_is_joined(
    client: httpx.AsyncClient, account: Any, spans: InMemorySpanExporter
) -> None:
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await _chat_under(client, account, f"00-{parent_trace}-00f067aa0ba902b7-01")
    assert response.headers["x-trace-id"] == parent_trace
    [server] = by_name(spans.get_finished_spans(), "POST /chat")
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert server.parent.is_remote


async def test_an_unsampled_incoming_trace_records_no_spans(
    client: httpx.AsyncClient, account: Any, spans: InMemorySpanExporter
) -> None:
    # The caller decided not to sample (flags 00): the parent-based sampler follows it for
    # the server span, and every child (transactions included) follows.
    parent_trace = "5bf92f3577b34da6a3ce929d0e0e4736"
    response = await _chat_under(client, account, f"00-{parent_trace}-00f067aa0ba902b7-00")
    assert response.status_code == 200
    assert response.headers["x-trace-id"] == parent_trace
    # Only this trace: the app's periodic tasks may make root spans of their own meanwhile.
    ours = [s for s in spans.get_finished_spans() if s.context.trace_id == int(parent_trace, 16)]
    assert ours == []


async def test_streamed_answer_span_ends_with_the_stream_and_errors_mark_spans(
    client: httpx.AsyncClient, account: Any, spans: InMemorySpanExporter
) -> None:
    response = await client.post(
        "/chat", json={"message": "refund", "stream": True}, headers=account.headers
    )
    assert "event: done" in response.text
    names = [s.name for s in spans.get_finished_spans()]
    assert "POST /chat" in names
    assert "chat builtin-kb" in names
    # No span per chunk sent or received.
    assert not [n for n in names if "http send" in n or "http receive" in n]

    spans.clear()
    missing = await client.get(f"/api/conversations/{uuid.uuid4()}", headers=account.headers)
    assert missing.status_code == 404
    [span] = by_name(spans.get_finished_spans(), "GET /api/conversations/{conversation_id}")
    assert (span.attributes or {})["http.response.status_code"] == 404


async def test_the_auth_service_gets_a_client_span_and_the_traceparent(
    spans: InMemorySpanExporter, sessionmaker: Any
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry import trace

    from chatlens.auth.external import ExternalAuth
    from chatlens.errors import Unauthorized

    seen: list[str | None] = []

    class AuthService(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("traceparent"))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), AuthService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    auth = ExternalAuth(
        url=f"http://127.0.0.1:{server.server_address[1]}/validate", internal_api_key=None
    )
    try:
        with trace.get_tracer("test").start_as_current_span("caller") as caller:
            async with sessionmaker() as session:
                with pytest.raises(Unauthorized):
                    await auth.authenticate(session, "some-token")
    finally:
        await auth.aclose()
        server.shutdown()
    [header] = seen
    caller_ids = caller.get_span_context()
    [client_span] = [s for s in spans.get_finished_spans() if s.name == "GET"]
    assert client_span.parent is not None and client_span.parent.span_id == caller_ids.span_id
    attributes = dict(client_span.attributes or {})
    # The stable semantic-convention name, or the older one an instrumentation may use.
    assert attributes.get("http.response.status_code", attributes.get("http.status_code")) == 401
    # The service sees the client span as its parent: the trace continues there.
    assert header is not None
    _, trace_id, parent_id, flags = header.split("-")
    assert (trace_id, parent_id) == (
        f"{caller_ids.trace_id:032x}",
        f"{client_span.context.span_id:016x}",
    )
    assert int(flags, 16) & 1  # sampled


async def test_an_upstream_answer_has_its_http_client_span_and_the_intent_under_it(
    spans: InMemorySpanExporter, fresh_database_url: Any
) -> None:
    from tests.upstream import FakeUpstream
    from tests.upstream_app import MODEL, running

    with FakeUpstream() as upstream:
        async with running(await fresh_database_url("upstream_spans"), upstream) as chatlens:
            response = await chatlens.client.post(
                "/chat", json={"message": "where is my order?"}, headers=chatlens.headers
            )
    assert response.status_code == 200
    finished = spans.get_finished_spans()
    [answer] = by_name(finished, f"chat {MODEL}")
    assert (answer.attributes or {})["chatlens.intent"] == "order_status"
    # The call itself: an HTTP client span under the answer's, whose id the upstream gets
    # as its parent in `traceparent`.
    [http] = [s for s in by_name(finished, "POST") if s.kind is SpanKind.CLIENT]
    assert http.parent is not None and http.parent.span_id == answer.context.span_id
    attributes = dict(http.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.full"] == f"{upstream.url}/chat/completions"
    assert attributes["server.address"] == "127.0.0.1"
    [call] = [c for c in upstream.calls if c.model == MODEL]
    _, trace_id, parent_id, _ = call.headers["traceparent"].split("-")
    assert (trace_id, parent_id) == (
        f"{http.context.trace_id:032x}",
        f"{http.context.span_id:016x}",
    )


async def test_a_failed_upstream_call_is_an_error_client_span(
    spans: InMemorySpanExporter, fresh_database_url: Any
) -> None:
    from tests.upstream import FakeUpstream
    from tests.upstream_app import running

    with FakeUpstream() as upstream:
        async with running(await fresh_database_url("upstream_fail"), upstream) as chatlens:
            chatlens.use_model("fail")
            response = await chatlens.client.post(
                "/chat", json={"message": "hello"}, headers=chatlens.headers
            )
    assert response.status_code == 502
    calls = [s for s in by_name(spans.get_finished_spans(), "POST") if s.kind is SpanKind.CLIENT]
    assert len(calls) == 2  # the attempt and its retry (upstream_max_retries=1)
    for call in calls:
        assert (call.attributes or {})["http.response.status_code"] == 500
        assert (call.attributes or {})["error.type"] == "500"
        assert call.status.status_code is StatusCode.ERROR


async def test_a_failing_statement_gives_an_error_span(
    sessionmaker: Any, spans: InMemorySpanExporter
) -> None:
    async with sessionmaker() as session:
        with pytest.raises((OperationalError, ProgrammingError)):
            await session.execute(text("SELECT * FROM no_such_table"))
    [failed] = [
        s
        for s in spans.get_finished_spans()
        if "no_such_table" in str((s.attributes or {}).get("db.query.text"))
    ]
    assert failed.kind is SpanKind.CLIENT
    assert failed.status.status_code.name == "ERROR"
    assert [event.name for event in failed.events] == ["exception"]
    assert str((failed.attributes or {})["error.type"]).endswith("Error")
    assert (failed.attributes or {})["db.operation.name"] == "SELECT"
    assert failed.end_time is not None


async def test_credentials_in_a_url_never_reach_a_client_span(
    spans: InMemorySpanExporter,
) -> None:
    from opentelemetry import trace

    from chatlens.observability.tracing import HttpClientSpan

    with trace.get_tracer("test").start_as_current_span("caller"):
        for url in ("http://bot:s3cret@127.0.0.1:9/v1/models", "http://127.0.0.1:9/v1/models"):
            HttpClientSpan("GET", httpx.URL(url)).finish(200)
    full = [(s.attributes or {})["url.full"] for s in spans.get_finished_spans() if s.name == "GET"]
    assert full == ["http://127.0.0.1:9/v1/models"] * 2


async def test_turns_committed_together_can_be_followed_to_their_statements(
    client: httpx.AsyncClient,
    account: Any,
    app: Any,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from chatlens.db.batch import GroupCommit

    # One drain, as on SQLite, so that concurrent turns are grouped on either database.
    monkeypatch.setattr(
        state.of(app).get(ChatPipeline).answering.writer,
        "group",
        GroupCommit(state.of(app).get(Database).engine, drains=1),
    )
    responses = await asyncio.wait_for(
        asyncio.gather(
            *(
                client.post(
                    "/chat", json={"message": f"where is order {i}"}, headers=account.headers
                )
                for i in range(8)
            )
        ),
        20,
    )
    finished = spans.get_finished_spans()

    def of_trace(trace_id: int) -> list[ReadableSpan]:
        return [s for s in finished if s.context.trace_id == trace_id]

    groups = 0
    for response in responses:
        trace_id = int(response.headers["x-trace-id"], 16)
        mine = of_trace(trace_id)
        writes = [s for s in mine if "INSERT" in str((s.attributes or {}).get("db.query.text"))]
        # Both writes of a turn (question, answer): a transaction span each, under the
        # turn's server span, however many turns the transaction committed.
        assert len(writes) >= 2, [s.name for s in mine]
        server = next(s for s in mine if s.name == "POST /chat")
        for span in writes:
            assert span.parent is not None and span.parent.span_id == server.context.span_id
            together = (span.attributes or {}).get("chatlens.db.group_commit.writes")
            if together is None:
                continue
            groups += 1
            assert together >= 2
            # The same transaction in the other turns' traces: one of them is linked.
            if span.links:
                [link] = span.links
                first = [s for s in finished if s.context.span_id == link.context.span_id]
                assert first and first[0].start_time == span.start_time
                assert first[0].context.trace_id != trace_id
    assert groups > 0  # the turns were grouped at least once


async def test_span_processors_see_every_span_start(
    client: httpx.AsyncClient, account: Any, spans: InMemorySpanExporter
) -> None:
    """Spans are the SDK's: a processor working in on_start (sentry-sdk's) sees each."""
    response = await client.post("/chat", json={"message": "refund"}, headers=account.headers)
    ended = [
        s.context.span_id
        for s in spans.get_finished_spans()
        if format(s.context.trace_id, "032x") == response.headers["x-trace-id"]
    ]
    assert len(ended) >= 5
    assert set(ended) <= set(_started)
