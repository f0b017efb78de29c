"""Request heads are bounded by `chatlens serve` before anything reads them: a real server."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from chatlens.hardening import API_POLICY, DEFAULT_HEADERS, NO_STORE
from chatlens.http_protocol import HEAD_TIMEOUT_SECONDS
from tests.helpers import Server, parse_sse

MIB = 1024 * 1024
KEY = re.compile(rb"cl_[A-Za-z0-9_-]{43}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from tests.helpers import env_without_chatlens

    workdir = tmp_path_factory.mktemp("limits")
    env = {
        **env_without_chatlens(),
        "CHATLENS_ACCESS_LOG": "false",
        # A streamed answer takes a second or two: long enough to pipeline behind it.
        "CHATLENS_BUILTIN_STREAM_DELAY_MS": "50",
    }
    server = Server(workdir, env)
    try:
        yield server
    finally:
        server.stop()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def exchange(port: int, head: bytes, *, pad: int = 0, timeout: float = 30) -> tuple[bytes, float]:
    """Send `head`, then `pad` more bytes of a header value that never ends; the raw answer
    and the seconds it took. A server that closes early only stops the sending; one that
    neither answers nor closes within `timeout` gives no answer, in that many seconds."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        try:
            conn.sendall(head)
            chunk = b"a" * MIB
            for _ in range(pad // MIB):
                conn.sendall(chunk)
        except OSError:
            pass  # refused while sending: the answer is read below
        answer = b""
        try:
            while data := conn.recv(65536):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, time.monotonic() - started


def parse(answer: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = (line.split(": ", 1) for line in lines[1:])
    headers = {name.lower(): value for name, value in fields}
    return int(lines[0].split()[1]), headers, orjson.loads(body)


REQUEST = b"GET /health/live HTTP/1.1\r\nHost: chatlens.test\r\n"


def test_an_oversized_header_is_refused_at_once_with_bounded_memory(server: Server) -> None:
    answer, seconds = exchange(server.port, REQUEST + b"X-Big: ", pad=MIB)
    status, headers, body = parse(answer)
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert body["error"]["type"] == "request_header_too_large"  # type: ignore[index]
    assert seconds < 5

    before = rss_bytes(server.process.pid)
    answer, seconds = exchange(server.port, REQUEST + b"X-Big: ", pad=64 * MIB)
    grown = rss_bytes(server.process.pid) - before
    assert parse(answer)[0] == 431
    assert seconds < 5
    # The parser kept at most the limit and one read, not the 64 MiB sent.
    assert grown < 8 * MIB, grown


def test_the_servers_own_refusals_carry_the_security_headers(server: Server) -> None:
    oversized, _ = exchange(server.port, REQUEST + b"X-Big: ", pad=MIB)
    malformed, _ = exchange(server.port, b"GET /health/live HTTP/1.1\r\nHost chatlens\r\n\r\n")
    for answer in (oversized, malformed):
        _, headers, _ = parse(answer)
        for name, value in (*DEFAULT_HEADERS, API_POLICY, NO_STORE):
            assert headers[name.decode()] == value.decode(), name


CHUNKED = (
    b"POST /health/live HTTP/1.1\r\nHost: chatlens.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n"
)


def test_request_trailers_are_bounded_like_a_head(server: Server) -> None:
    before = rss_bytes(server.process.pid)
    answer, seconds = exchange(server.port, CHUNKED + b"X-Trailer: ", pad=64 * MIB, timeout=10)
    grown = rss_bytes(server.process.pid) - before
    # The parser kept at most the limit and a read or two, not the 64 MiB sent.
    assert grown < 8 * MIB, grown
    # Closed without an answer: the application has the request and may be answering it.
    assert answer == b""
    assert seconds < 5


def test_a_chunked_body_with_trailers_reaches_the_application(server: Server) -> None:
    trailers = b"X-Checksum: 1234\r\nX-Note: done\r\n\r\n"
    # Two requests on one connection: the trailers end the first, the second is answered.
    answer, _ = exchange(server.port, CHUNKED + trailers + REQUEST + b"Connection: close\r\n\r\n")
    first, second = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"405 ")
    assert second.startswith(b"200 ")


def test_a_body_over_the_limit_is_the_applications_413(server: Server) -> None:
    body = b"x" * (256 * 1024)  # more than the head limit too: a body is not a head
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: chatlens.test\r\n"
    answer, _ = exchange(server.port, head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    status, headers, error = parse(answer)
    assert status == 413
    assert headers["x-frame-options"] == "DENY"
    assert error["error"]["type"] == "payload_too_large"  # type: ignore[index]


def test_pipelined_requests_wait_in_a_bounded_queue(server: Server) -> None:
    sent = 100_000
    before = rss_bytes(server.process.pid)
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as conn:
        answers = bytearray()

        def read_answers() -> None:
            try:
                while data := conn.recv(65536):
                    answers.extend(data)
            except OSError:
                pass

        reader = threading.Thread(target=read_answers)
        reader.start()
        # Closed while sending: the answers are read all the same.
        with contextlib.suppress(OSError):
            conn.sendall((REQUEST + b"\r\n") * sent)
        reader.join(timeout=15)
        assert not reader.is_alive(), "the connection stayed open"
    grown = rss_bytes(server.process.pid) - before
    statuses = [bytes(line[:3]) for line in answers.split(b"HTTP/1.1 ")[1:]]
    # The first requests are answered in order, in full; then the connection closes.
    assert 16 <= len(statuses) < sent
    assert set(statuses) == {b"200"}
    assert grown < 8 * MIB, grown


def test_a_head_that_never_ends_is_closed_in_time(server: Server) -> None:
    started = time.monotonic()
    deadline = started + HEAD_TIMEOUT_SECONDS + 10
    with (
        socket.create_connection(("127.0.0.1", server.port)) as idle,
        socket.create_connection(("127.0.0.1", server.port), timeout=1) as slow,
    ):
        slow.sendall(REQUEST)
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                closed = slow.recv(65536) == b""
            except TimeoutError:
                slow.sendall(b"X-More: 1\r\n")  # a line a second: each byte is news
            except ConnectionResetError:
                closed = True
        assert closed, "a head sent a line a second was never cut off"
        assert time.monotonic() - started >= HEAD_TIMEOUT_SECONDS - 1
        # A connection that sends nothing at all is closed by then too.
        idle.settimeout(5)
        assert idle.recv(65536) == b""


def test_too_many_headers_are_refused(server: Server) -> None:
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(500))
    answer, seconds = exchange(server.port, REQUEST + many + b"\r\n")
    status, _, body = parse(answer)
    assert status == 431
    assert "request headers" in body["error"]["message"]  # type: ignore[index]
    assert seconds < 5


def test_a_head_just_over_the_limit_is_refused_however_it_is_read(server: Server) -> None:
    # 40 KiB in one write: one read may bring all of it, the end of the head included.
    for size in (33 * 1024, 40 * 1024, 200 * 1024):
        answer, _ = exchange(server.port, REQUEST + b"X-Big: " + b"a" * size + b"\r\n\r\n")
        status, _, body = parse(answer)
        assert status == 431, (size, status)
        assert "exceed" in body["error"]["message"]  # type: ignore[index]
    # Many headers, each small, that add up past the limit.
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 500) for i in range(90))
    answer, _ = exchange(server.port, REQUEST + many + b"\r\n")
    assert parse(answer)[0] == 431


def test_a_malformed_request_is_a_json_400(server: Server) -> None:
    answer, _ = exchange(server.port, b"GET /health/live HTTP/1.1\r\nHost chatlens\r\n\r\n")
    status, headers, body = parse(answer)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert body["error"]["type"] == "bad_request"  # type: ignore[index]


def test_ordinary_requests_pass_and_the_server_does_not_name_itself(server: Server) -> None:
    headers = {f"X-H{i}": "1" for i in range(50)} | {"X-Token": "t" * 16_000}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(3):  # keep-alive: each request's head is counted on its own
            response = client.get("/health/live", headers=headers)
            assert response.status_code == 200
            assert "server" not in response.headers


def read_until(conn: socket.socket, answer: bytes, marker: bytes, deadline: float) -> bytes:
    while marker not in answer and time.monotonic() < deadline:
        data = conn.recv(65536)
        if not data:
            break
        answer += data
    return answer


def dechunk(body: bytes) -> tuple[bytes, bytes]:
    """A chunked body's data, and what follows its last chunk; AssertionError if it is cut."""
    data = b""
    while True:
        size_line, crlf, body = body.partition(b"\r\n")
        assert crlf, "the chunked body ends without its last chunk"
        assert re.fullmatch(rb"[0-9a-f]+", size_line), f"not a chunk: {size_line[:60]!r}"
        size = int(size_line, 16)
        assert body[size : size + 2] == b"\r\n", "a chunk is cut or overrun"
        data, body = data + body[:size], body[size + 2 :]
        if size == 0:
            return data, body


@pytest.mark.parametrize(
    ("pipelined", "status", "error_type"),
    [
        # Far over the limit, so that no one read can both cross it and end the head.
        (REQUEST + b"X-Big: " + b"a" * MIB + b"\r\n\r\n", 431, "request_header_too_large"),
        (b"GET /health/live HTTP/1.1\r\nHost chatlens\r\n\r\n", 400, "bad_request"),
    ],
    ids=["oversized", "malformed"],
)
def test_a_head_refused_behind_a_streamed_answer_is_answered_after_it(
    server: Server, pipelined: bytes, status: int, error_type: str
) -> None:
    key = KEY.findall(server.output.encode())[0]
    log_lines = len(server.lines())
    body = orjson.dumps({"message": "I want my money back", "stream": True})
    chat = (
        b"POST /chat HTTP/1.1\r\nHost: chatlens.test\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (key, len(body), body)
    )
    deadline = time.monotonic() + 20
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as conn:
        conn.sendall(chat)
        # The answer has begun streaming: the refused head arrives in the middle of it.
        answer = read_until(conn, b"", b"event: delta", deadline)
        assert b"event: delta" in answer, answer
        conn.sendall(pipelined)
        with contextlib.suppress(ConnectionResetError):
            while time.monotonic() < deadline and (data := conn.recv(65536)):
                answer += data
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"transfer-encoding: chunked" in head.lower()
    events, refusal = dechunk(rest)
    assert parse_sse(events.decode())[-1][0] == "done"
    # Then the refusal of the pipelined request, and the connection closes.
    assert parse(refusal)[0] == status
    assert parse(refusal)[2]["error"]["type"] == error_type  # type: ignore[index]
    # Not the streamed request's id: the refused one never started.
    assert parse(refusal)[2]["error"]["request_id"] is None  # type: ignore[index]
    # The server was not interrupted in the middle of its answer.
    new_lines = server.lines()[log_lines:]
    assert not [line for line in new_lines if orjson.loads(line).get("level") == "ERROR"]
    assert "Exception in ASGI application" not in server.output


def test_blank_lines_between_requests_do_not_hold_a_connection_open(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(REQUEST + b"\r\n")
        answer = read_until(conn, b"", b'"alive"', time.monotonic() + 10)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        # Blank lines before a request line are allowed, and call no parser callback.
        conn.settimeout(0.5)
        started = time.monotonic()
        deadline = started + HEAD_TIMEOUT_SECONDS + 5
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                closed = conn.recv(65536) == b""
            except TimeoutError:
                conn.sendall(b"\r\n")  # every half second
            except ConnectionResetError:
                closed = True
        assert closed, "blank lines held the connection open"
        assert time.monotonic() - started <= HEAD_TIMEOUT_SECONDS + 2
