"""A small closed-loop load generator: N keep-alive workers, bounded by time and count."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypedDict

import httpx

# One request: given the shared client and the request's sequence number, send it.
Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


class LoadStats(TypedDict):
    """What one load run measured; latencies are of successful requests only."""

    requests: int
    errors: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class Budget:
    """Requests left to start; shared by the workers of one phase."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


async def phase(
    client: httpx.AsyncClient,
    send: Send,
    *,
    concurrency: int,
    seconds: float,
    budget: Budget,
    latencies: list[float] | None,
    on_error: Callable[[str], None] | None,
) -> int:
    """Run `concurrency` workers until the deadline or the budget; return failed requests."""
    deadline = time.perf_counter() + seconds
    numbers = itertools.count()
    errors = 0

    async def worker() -> None:
        nonlocal errors
        # No new request after the deadline: a run lasts `seconds` plus one request at most.
        while time.perf_counter() < deadline and budget.take():
            number = next(numbers)
            started = time.perf_counter()
            try:
                response = await send(client, number)
            except (httpx.HTTPError, OSError) as exc:
                errors += 1
                if on_error is not None:
                    on_error(f"{type(exc).__name__}: {exc}")
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            if not response.is_success:
                errors += 1
                if on_error is not None:
                    on_error(f"HTTP {response.status_code}: {response.text[:200]}")
            elif latencies is not None:
                latencies.append(elapsed_ms)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return errors


async def run_load(
    send: Send,
    *,
    base_url: str,
    duration_s: float,
    concurrency: int,
    max_requests: int = 1_000_000,
    warmup_s: float = 1.0,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
    on_error: Callable[[str], None] | None = None,
) -> LoadStats:
    """Warm up (not counted), then load `base_url` for `duration_s` or `max_requests`."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=timeout_s
    ) as client:
        # Warm-up opens the keep-alive connections and lets the server fill its caches.
        await phase(
            client,
            send,
            concurrency=concurrency,
            seconds=warmup_s,
            budget=Budget(max_requests),
            latencies=None,
            on_error=on_error,
        )
        latencies: list[float] = []
        started = time.perf_counter()
        errors = await phase(
            client,
            send,
            concurrency=concurrency,
            seconds=duration_s,
            budget=Budget(max_requests),
            latencies=latencies,
            on_error=on_error,
        )
        duration = time.perf_counter() - started
    latencies.sort()
    requests = len(latencies) + errors
    return LoadStats(
        requests=requests,
        errors=errors,
        duration_s=round(duration, 3),
        rps=round(requests / duration, 1) if duration > 0 else 0.0,
        p50_ms=round(percentile(latencies, 0.50), 2),
        p90_ms=round(percentile(latencies, 0.90), 2),
        p99_ms=round(percentile(latencies, 0.99), 2),
    )
