"""Requests counted per minute in memory, for the SLA: flushed in batches, never per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Upper bounds of the latency buckets, in milliseconds; the last one is +Inf (the count).
LATENCY_BOUNDS_MS = (100, 250, 500, 1000, 2000, 5000, 10000)


@dataclass(slots=True)
class MinuteStats:
    """One minute of one route and status class (2xx, 4xx, 5xx, ...)."""

    minute: int  # Unix time of the minute's start
    route: str
    status_class: str
    count: int = 0
    latency_sum_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS_MS))

    def add(self, duration_ms: float) -> None:
        self.count += 1
        self.latency_sum_ms += duration_ms
        for index, bound in enumerate(LATENCY_BOUNDS_MS):
            if duration_ms <= bound:
                self.buckets[index] += 1

    def merge(self, other: MinuteStats) -> None:
        self.count += other.count
        self.latency_sum_ms += other.latency_sum_ms
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


class RequestStats:
    """Aggregates requests per (minute, route, status class); `drain()` hands them over."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._stats: dict[tuple[int, str, str], MinuteStats] = {}

    def record(self, route: str, status: int, duration_s: float) -> None:
        minute = int(self._clock() // 60) * 60
        status_class = f"{status // 100}xx"
        key = (minute, route, status_class)
        with self._lock:
            stats = self._stats.get(key)
            if stats is None:
                stats = self._stats[key] = MinuteStats(minute, route, status_class)
            stats.add(duration_s * 1000)

    def drain(self) -> list[MinuteStats]:
        with self._lock:
            stats, self._stats = self._stats, {}
        return list(stats.values())

    def restore(self, stats: list[MinuteStats]) -> None:
        """Put back what could not be written, to go with the next flush."""
        with self._lock:
            for item in stats:
                key = (item.minute, item.route, item.status_class)
                current = self._stats.get(key)
                if current is None:
                    self._stats[key] = item
                else:
                    current.merge(item)


def quantile_from_buckets(q: float, buckets: list[int], count: int) -> float | None:
    """The q-quantile in ms, interpolated within the bucket (as Prometheus does); None if empty.

    Past the last finite bound the answer is that bound: the histogram knows no more.
    """
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0
    for bound, cumulative in zip(LATENCY_BOUNDS_MS, buckets, strict=True):
        if cumulative >= rank:
            inside = cumulative - below
            if inside <= 0:
                return float(bound)
            return lower + (bound - lower) * (rank - below) / inside
        lower, below = float(bound), cumulative
    return float(LATENCY_BOUNDS_MS[-1])
