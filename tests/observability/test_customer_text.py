"""With content logging off, a customer's words leave chatlens only in the answer to them:
not in a log line, a Sentry event or an error body, even when the upstream quotes them."""

from __future__ import annotations

import gzip
import re
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers import Server, parse_sse
from tests.sentry_receiver import Receiver
from tests.upstream import FakeUpstream

# Nothing in it looks like personal data to a pattern: only knowing the prompt removes it.
CUSTOMER_TEXT = (
    "Hello, this is Margarethe Vogelsang from Lindenweg in Oberammergau; the blue winter "
    "jacket arrived torn and my husband Friedrich wants our money back before Christmas"
)
# Pieces an upstream may quote: the start, the end, a middle stretch.
FRAGMENTS = ("Margarethe Vogelsang", "Oberammergau", "husband Friedrich", "blue winter jacket")
KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def _leaks(text: str) -> list[str]:
    return [fragment for fragment in FRAGMENTS if fragment in text]


def _ask_three_ways(server: Server, key: str, model: str) -> list[httpx.Response]:
    """The customer's text through /chat, /chat streamed and /v1/chat/completions."""
    headers = {"Authorization": f"Bearer {key}"}
    return [
        httpx.post(f"{server.url}/chat", json={"message": CUSTOMER_TEXT}, headers=headers),
        httpx.post(
            f"{server.url}/chat",
            json={"message": CUSTOMER_TEXT, "stream": True},
            headers=headers,
            timeout=10,
        ),
        httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": CUSTOMER_TEXT}]},
            headers=headers,
            timeout=10,
        ),
    ]


@pytest.mark.parametrize("status", [400, 500])
def test_an_upstream_quoting_the_prompt_leaks_it_nowhere(
    tmp_path: Path,
    env_without_chatlens: dict[str, str],
    upstream: FakeUpstream,
    receiver: Receiver,
    status: int,
) -> None:
    model = f"echo:{status}"
    env = {
        **env_without_chatlens,
        "LOG_LEVEL": "DEBUG",
        "SENTRY_DSN": receiver.dsn,
        # Transactions too: their spans carry the exceptions recorded on them.
        "CHATLENS_SENTRY_TRACES_SAMPLE_RATE": "1.0",
        "CHATLENS_INFERENCE_BACKEND": "openai",
        "CHATLENS_OPENAI_BASE_URL": upstream.url,
        "CHATLENS_OPENAI_API_KEY": "sk-upstream-secret",
        "CHATLENS_MODEL": model,
        "CHATLENS_UPSTREAM_MAX_RETRIES": "1",
    }
    server = Server(tmp_path, env)
    try:
        key_match = KEY.search(server.output)
        assert key_match is not None
        answer, streamed, relayed = _ask_three_ways(server, key_match.group(), model)
    finally:
        server.stop()

    # The upstream quoted the text each time it was called.
    assert upstream.calls_to(model) >= 3
    # The client is told what failed: the upstream's error type and code, not its quote.
    assert answer.status_code == (400 if status == 400 else 502), answer.text
    assert "invalid_request_error/content_policy" in answer.json()["error"]["message"]
    assert [data for name, data in parse_sse(streamed.text) if name == "error"], streamed.text
    assert relayed.status_code in (answer.status_code, 503), relayed.text  # breaker open
    for body in (answer, streamed, relayed):
        assert _leaks(body.text) == [], body.text

    logged = [orjson.loads(line) for line in server.lines()]
    failures = [line for line in logged if line["event"] in ("upstream_failed", "upstream_retry")]
    assert failures, "the failure is logged"
    assert all("content_policy" in line["reason"] for line in failures)
    for line in logged:
        assert _leaks(orjson.dumps(line).decode()) == [], line

    assert receiver.bodies, "transactions reached Sentry"
    for envelope in receiver.bodies:
        assert _leaks(envelope.decode()) == []


@pytest.mark.parametrize(
    "quoted",
    [
        CUSTOMER_TEXT,
        CUSTOMER_TEXT[:70] + "...",  # cut short
        "..." + CUSTOMER_TEXT[40:],  # its start dropped
        CUSTOMER_TEXT[20:90],  # a stretch from the middle
    ],
)
def test_an_upstream_error_keeps_its_type_code_and_words_but_not_the_prompt(quoted: str) -> None:
    from chatlens.inference.upstream_wire import MESSAGE_LIMIT, error_message

    body = {
        "error": {
            "message": f"Request blocked: '{quoted}' matched policy 7 (key sk-proj-{'Ab3dE' * 8})",
            "type": "invalid_request_error",
            "code": "content_policy",
        }
    }
    message = error_message(orjson.dumps(body), prompt=["You are a support bot.", CUSTOMER_TEXT])
    assert message.startswith("invalid_request_error/content_policy: Request blocked: '")
    assert "matched policy 7" in message
    assert _leaks(message) == []
    assert "Ab3dE" not in message
    long = error_message(orjson.dumps({"error": "x" * 10_000}), prompt=[CUSTOMER_TEXT])
    assert len(long) <= MESSAGE_LIMIT


class _Collector:
    """An OTLP/HTTP collector on 127.0.0.1 that keeps every request body, decompressed."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                """Silent: the test reads what arrived."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_spans_leave_the_process_masked(
    tmp_path: Path, env_without_chatlens: dict[str, str]
) -> None:
    collector = _Collector()
    env = {**env_without_chatlens, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
    server = Server(tmp_path, env)
    try:
        key_match = KEY.search(server.output)
        assert key_match is not None
        headers = {"Authorization": f"Bearer {key_match.group()}"}
        # A raw path is a span attribute (`url.path`): here it names a customer.
        missing = httpx.get(
            f"{server.url}/api/conversations/jane.doe@example.com", headers=headers, timeout=10
        )
        assert missing.status_code in (404, 422)
    finally:
        server.stop()  # flushes the spans
        collector.server.shutdown()

    exported = b"".join(collector.bodies)
    assert b"/api/conversations/" in exported, "the request's spans were exported"
    assert b"jane.doe@example.com" not in exported
    assert b"[email]" in exported


def _python_lines_run(call: Callable[[], object], budget: int) -> int:
    """The Python lines (calls and returns included) that `call` runs; AssertionError as
    soon as they pass `budget`, so code of the wrong complexity fails fast here."""
    count = 0

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        count += 1
        if count > budget:
            raise AssertionError(f"more than {budget} lines run")
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(previous)
    return count


@pytest.mark.parametrize(
    ("error", "prompt"),
    [
        # A message of one repeated character against a long conversation of it.
        ("x" + "a" * 1999, ["b" + "a" * 60_000]),
        # A long echo against a long conversation in which every word recurs.
        (
            "Invalid: '" + (CUSTOMER_TEXT + " ") * 12 + "'",
            [CUSTOMER_TEXT + " "] * 3 + [(CUSTOMER_TEXT + " ") * 400],
        ),
    ],
)
def test_cutting_the_prompt_out_costs_a_pass_over_each_text(error: str, prompt: list[str]) -> None:
    from chatlens.inference.upstream_wire import without_prompt

    # The prompt is cut out of an upstream's error on every attempt and every failed event,
    # on the event loop: the work grows with the texts' lengths, never with their product.
    size = len(error) + sum(map(len, prompt))
    result: list[str] = []
    _python_lines_run(lambda: result.append(without_prompt(error, prompt)), budget=10 * size)
    [cut] = result
    assert cut.startswith(error[0]) and "[prompt]" in cut
    assert "aaaaaaaaaaaa" not in cut
    assert _leaks(cut) == []
