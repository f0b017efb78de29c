"""uvicorn's httptools protocol with bounds on the request head, and JSON for what it refuses.

uvicorn bounds a request head only under h11 (`h11_max_incomplete_event_size`); with
httptools, which `chatlens serve` runs because it costs less than half of h11's CPU per
request, a client could send a header of any size and the parser would keep all of it.
This subclass counts the bytes of each head as they arrive and the headers as they are
parsed, and refuses a head over either limit with 431 before the application (and its
authentication) sees the request.

The trailer fields after the last chunk of a chunked body are a second head, read after
the application has the request: httptools keeps each field whole before it hands it
over, and uvicorn does not stop reading for them. ASGI has no place for request trailers,
so they are dropped, and their bytes are counted against the same limit; past it the
connection is closed (the application may already be answering, so nothing is written).

uvicorn reads on after every answer and queues each request it reads while an earlier one
is being answered, so a client that pipelines requests without waiting grew that queue
without end. At most `MAX_PIPELINED` requests wait on a connection; the rest is dropped and
the connection closed once those are answered, as HTTP/1.1 lets a server do with pipelined
requests (the client sends again what was not answered).

uvicorn's `timeout_keep_alive` closes a connection idle after an answer, but nothing bounded
one that never sends a whole head: a new connection, or a head sent a byte at a time. A
head must now be complete within `HEAD_TIMEOUT_SECONDS` of its first byte (or of the
connection), or the connection is closed. Bytes that begin no request, such as blank lines
after an answer, stop uvicorn's keep-alive timer without a parser callback; they start
the head timer, so they do not keep a connection open either.

A head refused while earlier requests on the connection are still being answered is
answered after them, in order: the connection stops reading, and the 431 or 400 is written
once the last of those answers is complete.

`uvicorn.run(http=...)` takes the protocol class; the subclass extends asyncio's
`data_received` and the parser callbacks httptools calls (`on_message_begin`, `on_url`,
`on_header`, `on_headers_complete`, `on_body`, `on_chunk_header`, `on_chunk_complete`,
`on_message_complete`), asyncio's `connection_made` and `connection_lost`, and uvicorn's own
`send_400_response` and `on_response_complete`.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from chatlens.errors import error_body
from chatlens.hardening import API_POLICY, DEFAULT_HEADERS, NO_STORE

# After an error the connection reads and drops what the client is still sending for at
# most this long, so that the client reads the answer instead of a reset connection.
LINGER_SECONDS = 2.0
# Requests read on one connection and not yet answered. Browsers do not pipeline; clients
# that do send a few.
MAX_PIPELINED = 16
# From a new connection or the first byte of a head to its end. A client sends its head at
# once; a slow link still sends 32 KiB well within this.
HEAD_TIMEOUT_SECONDS = 10.0

_REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}
# What every chatlens answer carries, as the security headers middleware adds it.
_SECURITY_HEADERS = b"".join(
    b"%s: %s\r\n" % header for header in (*DEFAULT_HEADERS, API_POLICY, NO_STORE)
)


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limits."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with limits on each request head, its trailers and the pipeline."""

    def __init__(self, *args: Any, max_head_bytes: int, max_headers: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self.in_head = True
        self.head_bytes = 0
        self.header_count = 0
        # The head as parsed (target and fields): exact, where head_bytes counts reads.
        self.head_size = 0
        # After a chunk header, until its data: the last chunk's trailer fields, if any.
        self.in_trailers = False
        self.trailer_bytes = 0
        self.refusal: tuple[int, str, str] | None = None
        self.refused = False
        self.unanswered = 0
        # Past MAX_PIPELINED: the requests read are answered, nothing more is.
        self.draining = False
        # A refusal that waits for the answers to the requests read before it.
        self.deferred: tuple[int, str, str] | None = None
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_head_timer()
        super().connection_lost(exc)

    def start_head_timer(self) -> None:
        self.stop_head_timer()
        loop = asyncio.get_running_loop()
        self.head_timer = loop.call_later(HEAD_TIMEOUT_SECONDS, self.head_timed_out)

    def stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def head_timed_out(self) -> None:
        self.head_timer = None
        if self.refused or self.draining or self.transport.is_closing():
            return
        if self.unanswered:
            # The head waits behind answers still being written; it is judged after them.
            self.start_head_timer()
            return
        self.refused = True
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.refused or self.draining:
            return  # lingering, or answering what was read: the rest is dropped
        if self.in_head:
            self.head_bytes += len(data)
        elif self.in_trailers:
            self.trailer_bytes += len(data)
        super().data_received(data)
        if self.refused:
            return
        # Still in the head after this chunk: every byte of it was head. The parser holds at
        # most the limit plus one read (asyncio reads up to 256 KiB).
        if self.in_head and self.head_bytes > self.max_head_bytes:
            self.refuse(
                431,
                "request_header_too_large",
                f"request headers exceed {self.max_head_bytes} bytes",
            )
        # Likewise for trailers: a read that began in them and brought no chunk data was all
        # trailer (or the one that began them, at most a read).
        elif self.in_trailers and self.trailer_bytes > self.max_head_bytes:
            self.refused = True
            self.transport.close()
        elif self.in_head and self.head_bytes and self.head_timer is None:
            # Bytes before a request line (blank lines): httptools calls nothing for them, and
            # uvicorn's keep-alive timer stopped when they arrived.
            self.start_head_timer()

    def on_message_begin(self) -> None:
        if self.draining:
            return
        super().on_message_begin()
        self.start_head_timer()
        self.in_head = True
        self.header_count = 0
        self.head_size = 0

    def on_url(self, url: bytes) -> None:
        if self.draining:
            return
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head or self.draining:
            # A trailer field: uvicorn would append it to the headers of a request the
            # application is already handling.
            return
        self.header_count += 1
        self._count_head(len(name) + len(value) + 4)  # "name: value\r\n"
        if self.header_count > self.max_headers:
            self.refusal = (
                431,
                "request_header_too_large",
                f"more than {self.max_headers} request headers",
            )
            # httptools stops and raises a parser error; uvicorn answers it through
            # send_400_response, which sends this refusal instead.
            raise HeadTooLarge
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        """A head that arrived in one read is measured as it is parsed: over the limit, it
        is refused however it was read."""
        self.head_size += size
        if self.head_size > self.max_head_bytes:
            self.refusal = (
                431,
                "request_header_too_large",
                f"request headers exceed {self.max_head_bytes} bytes",
            )
            raise HeadTooLarge

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        self.stop_head_timer()
        if self.draining:
            return
        if self.unanswered >= MAX_PIPELINED:
            # The rest of this read is still parsed, into nothing.
            self.draining = True
            return
        self.unanswered += 1
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        # Chunk data follows, or, after the last (empty) chunk, the trailer fields.
        self.in_trailers = True
        self.trailer_bytes = 0

    def on_body(self, body: bytes) -> None:
        self.in_trailers = False
        if not self.draining:
            super().on_body(body)

    def on_chunk_complete(self) -> None:
        self.in_trailers = False

    def on_message_complete(self) -> None:
        if not self.draining:
            super().on_message_complete()
        self.in_head = True
        self.in_trailers = False

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.unanswered -= 1
        if self.unanswered:
            return
        if self.draining:
            self.refused = True
            self.close_gently()
        elif self.deferred is not None:
            refusal, self.deferred = self.deferred, None
            if not self.transport.is_closing():
                self.transport.resume_reading()  # the linger reads and drops the rest
                self.write_refusal(*refusal)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse, in chatlens's JSON error shape."""
        self.refuse(*(self.refusal or (400, "bad_request", "invalid HTTP request")))

    def refuse(self, status: int, error_type: str, message: str) -> None:
        # While draining, answers to requests read earlier are still being written.
        if self.refused or self.draining or self.transport.is_closing():
            return
        self.refused = True
        if self.unanswered and self.in_head:
            # A head read behind requests still being answered: written now, the refusal
            # would land inside their answers. It follows them; nothing more is read.
            self.deferred = (status, error_type, message)
            self.transport.pause_reading()
        elif self.unanswered > 1:
            # The body of a request queued behind others is malformed: its refusal cannot
            # come before their answers, and it would never have its body. Closed.
            self.transport.close()
        else:
            self.write_refusal(status, error_type, message)

    def write_refusal(self, status: int, error_type: str, message: str) -> None:
        refusal = error_body(error_type, message)
        # No request was started: a deferred refusal, written from an earlier request's
        # answer, must not carry that request's id.
        refusal["error"]["request_id"] = None
        body = orjson.dumps(refusal)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\n%b"
            b"connection: close\r\n\r\n" % (len(body), _SECURITY_HEADERS)
        )
        self.transport.write(b"".join(head) + body)
        self.close_gently()

    def close_gently(self) -> None:
        """Ends the answers and closes after LINGER_SECONDS, so that the client reads them."""
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, self.transport.close)


def bounded_httptools(*, max_head_bytes: int, max_headers: int) -> Any:
    """The protocol factory for `uvicorn.run(http=...)`; a partial, so that it pickles for
    uvicorn's worker processes."""
    return functools.partial(
        BoundedHttpToolsProtocol, max_head_bytes=max_head_bytes, max_headers=max_headers
    )
