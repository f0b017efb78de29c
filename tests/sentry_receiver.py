"""A Sentry ingestion endpoint on 127.0.0.1 for tests, and its fixture's set-up."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sentry_sdk

from chatlens.observability.sentry import close_sentry


class Receiver:
    """A Sentry ingestion endpoint on 127.0.0.1 that keeps every envelope, decompressed."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.problems: list[str] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                with receiver.arrived:
                    if self.path != "/api/1/envelope/":
                        receiver.problems.append(f"unexpected path {self.path}")
                    elif encoding == "gzip":
                        receiver.bodies.append(gzip.decompress(body))
                    elif encoding == "deflate":
                        receiver.bodies.append(zlib.decompress(body))
                    elif encoding in ("", "identity"):
                        receiver.bodies.append(body)
                    else:
                        receiver.problems.append(f"unsupported encoding {encoding}")
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                """Silent: the test reads what arrived, not an access log."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def items(self, kind: str) -> list[dict[str, Any]]:
        """The payloads of every envelope item of one type (`event`, `transaction`, ...)."""
        found = []
        for body in list(self.bodies):
            _, _, rest = body.partition(b"\n")  # the envelope header
            while rest.strip():
                line, _, rest = rest.partition(b"\n")
                header = json.loads(line)
                if "length" in header:
                    payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
                else:
                    payload, _, rest = rest.partition(b"\n")
                if header.get("type") == kind:
                    found.append(json.loads(payload))
        return found

    def events(self, count: int) -> list[dict[str, Any]]:
        """The error events, once `count` of them arrived (or after 5 s)."""
        sentry_sdk.flush(timeout=5)
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.items("event")) >= count, timeout=5)
            return self.items("event")


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A started receiver; on leaving, Sentry is closed (later tests must run without it,
    whatever this one left behind) and nothing unexpected may have arrived."""
    receiver = Receiver()
    receiver.thread.start()
    try:
        yield receiver
    finally:
        close_sentry()
        receiver.server.shutdown()
        receiver.server.server_close()
    assert receiver.problems == []
