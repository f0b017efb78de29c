"""The service with a span exporter that discards: full tracing cost, no network."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import uvicorn
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from chatlens import __version__
from chatlens.app import create_app as create_chatlens_app
from chatlens.observability.tracing import configure_tracing
from chatlens.settings import load_settings


class DiscardingExporter(SpanExporter):
    """Receives every finished span from the BatchSpanProcessor and drops it."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def create_app() -> FastAPI:
    """The chatlens app, its finished spans dropped instead of exported."""
    settings = load_settings()
    if settings.tracing_enabled:
        configure_tracing(
            service="chatlens",
            version=__version__,
            environment=settings.environment.value,
            otlp_endpoint=None,
            exporter=DiscardingExporter(),
        )
    return create_chatlens_app(settings)


def main() -> None:
    """Serve the app on 127.0.0.1 with one uvicorn worker, as `chatlens serve` does."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        "benchmarks.bench_app:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
