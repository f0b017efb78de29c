"""The cost of observability: the same build with it fully on, and off by settings.

On: JSON log lines to a file, 100 % trace sampling through a BatchSpanProcessor whose
exporter discards, every metric. Off: request logging, tracing and metrics switched off.
Runs alternate (off, on, off, on, ...) so drift on the machine hits both alike.
"""

from __future__ import annotations

import asyncio
import statistics
import sys

from benchmarks.load import LoadResult, run_load
from benchmarks.server import running
from benchmarks.workloads import chat_request

ON = {
    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    "CHATLENS_ACCESS_LOG": "true",
    "CHATLENS_METRICS_ENABLED": "true",
    "CHATLENS_TRACING_ENABLED": "true",
}
OFF = {
    "CHATLENS_ACCESS_LOG": "false",
    "CHATLENS_METRICS_ENABLED": "false",
    "CHATLENS_TRACING_ENABLED": "false",
}


def _one(env: dict[str, str], *, duration_s: float, concurrency: int) -> LoadResult:
    command = [sys.executable, "-m", "benchmarks.bench_app"]
    with running(command, env) as server:
        return asyncio.run(
            run_load(
                f"{server.url}/chat",
                chat_request(server.key),
                duration_s=duration_s,
                concurrency=concurrency,
            )
        )


def bench_observability(
    *, duration_s: float, concurrency: int, pairs: int = 3
) -> dict[str, object]:
    on: list[LoadResult] = []
    off: list[LoadResult] = []
    for _ in range(pairs):
        off.append(_one(OFF, duration_s=duration_s, concurrency=concurrency))
        on.append(_one(ON, duration_s=duration_s, concurrency=concurrency))
    on_rps = statistics.mean(r.rps for r in on)
    off_rps = statistics.mean(r.rps for r in off)
    on_p99 = statistics.mean(r.percentile(0.99) for r in on)
    off_p99 = statistics.mean(r.percentile(0.99) for r in off)
    return {
        "off_rps": [round(r.rps, 1) for r in off],
        "on_rps": [round(r.rps, 1) for r in on],
        "throughput_kept": round(on_rps / off_rps, 3),
        "p99_off_ms": round(off_p99, 2),
        "p99_on_ms": round(on_p99, 2),
        "p99_ratio": round(on_p99 / off_p99, 3),
        "errors": sum(r.errors for r in on + off),
    }
