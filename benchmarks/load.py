"""A small load generator: N keep-alive workers for a bounded time, latencies per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    duration_s: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(0.50), 2),
            "p90_ms": round(self.percentile(0.90), 2),
            "p99_ms": round(self.percentile(0.99), 2),
        }


async def run_load(
    url: str,
    make_request: Callable[[int], dict[str, Any]],
    *,
    duration_s: float,
    concurrency: int,
    warmup_s: float = 1.0,
    max_requests: int = 1_000_000,
) -> LoadResult:
    """POST to `url` from `concurrency` workers; bounded by time and by a request count."""
    latencies: list[float] = []
    errors = 0
    counter = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker(deadline: float, record: bool) -> None:
            nonlocal errors, counter
            while time.perf_counter() < deadline and counter < max_requests:
                counter += 1
                request = make_request(counter)
                started = time.perf_counter()
                try:
                    response = await client.post(url, **request)
                    ok = response.status_code < 400
                except httpx.HTTPError:
                    ok = False
                elapsed = (time.perf_counter() - started) * 1000
                if record:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors += 1

        warm_until = time.perf_counter() + warmup_s
        await asyncio.gather(*(worker(warm_until, False) for _ in range(concurrency)))
        counter = 0
        started = time.perf_counter()
        deadline = started + duration_s
        await asyncio.gather(*(worker(deadline, True) for _ in range(concurrency)))
        duration = time.perf_counter() - started
    return LoadResult(len(latencies), errors, duration, latencies)
