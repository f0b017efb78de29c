"""Spans reach an OTLP/HTTP collector, and the last ones are flushed when the server stops."""

from __future__ import annotations

import gzip
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers import Server

KEY = re.compile(r"cl_[A-Za-z0-9_-]{43}")


def test_spans_are_exported_over_otlp_and_flushed_on_shutdown(
    tmp_path: Path, env_without_chatlens: dict[str, str]
) -> None:
    received: list[ExportTraceServiceRequest] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.append(request)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return None

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    env = {
        **env_without_chatlens,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_address[1]}",
        "CHATLENS_ENVIRONMENT": "staging",
    }
    server = Server(tmp_path, env)
    try:
        key_match = KEY.search(server.output)
        assert key_match is not None
        response = httpx.post(
            f"{server.url}/chat",
            json={"message": "hello"},
            headers={"Authorization": f"Bearer {key_match.group()}"},
            timeout=10,
        )
        trace_id = response.headers["x-trace-id"]
    finally:
        # Well before the batch processor's 5 s delay: only the shutdown flush sends them.
        server.stop()
        collector.shutdown()

    spans = {}
    resources = []
    for request in received:
        for resource_spans in request.resource_spans:
            resources.append(
                {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans[span.name] = span
    assert {"POST /chat", "chat builtin-kb", "BATCH chatlens.db"} <= set(spans)
    assert spans["POST /chat"].trace_id.hex() == trace_id
    assert resources[0]["service.name"] == "chatlens"
    assert resources[0]["deployment.environment"] == "staging"
    assert resources[0]["service.version"]
