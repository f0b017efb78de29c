"""Masking on the log path, in µs per call: `python -m benchmarks.redaction`.

Every string field of every log line goes through `redact`, so its cost is paid on each
line. Five cases: short strings seen before (the remembered masks), short strings seen for
the first time, long strings (never remembered) without and with a key in them, and a
whole log line rendered to JSON.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable

import structlog

from chatlens.observability.logging import configure_logging
from chatlens.observability.redaction import redact

ROUNDS = 7
SHORT = (
    "http_request",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0.0.0 Safari/537.36",
    "/api/conversations/{conversation_id}/messages",
    "upstream_retry",
    "the model failed (HTTP 500): upstream exploded",
    "web",
    "HTTPStatusError",
)
LONG = (
    "Customer wrote: my order 88123 never arrived, I was charged twice and nobody answers "
    "the phone; please refund to the same account as before and confirm by mail. " * 6
)


def _time(call: Callable[[int], object], count: int) -> float:
    """The median over ROUNDS of µs per call."""
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for number in range(count):
            call(number)
        rounds.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(rounds)


def main() -> None:
    stream = io.BytesIO()
    options = {"level": "INFO", "fmt": "json", "service": "chatlens", "version": "bench"}
    configure_logging(**options, environment="bench", stream=stream)
    log = structlog.get_logger("chatlens.bench")
    results = {
        "short, seen before": _time(lambda n: redact(SHORT[n % len(SHORT)]), 200_000),
        "short, first time": _time(lambda n: redact(f"order {n} of user agent curl/8.{n}"), 50_000),
        "long (1 KiB)": _time(lambda n: redact(LONG), 5_000),
        "long, with a key": _time(lambda n: redact(f"{LONG} key AKIAIOSFODNN7EXAMPL3"), 5_000),
        "log line": _time(
            lambda n: log.info(
                "upstream_retry", model="gpt-4o-mini", attempt=1, reason=SHORT[n % len(SHORT)]
            ),
            50_000,
        ),
    }
    configure_logging(**options, environment="bench")
    for case, micros in results.items():
        print(f"{case:<20} {micros:8.2f} µs")


if __name__ == "__main__":
    main()
