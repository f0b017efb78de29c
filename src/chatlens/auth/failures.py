"""Failed authentication: counted by reason, and logged as a sample, not line by line.

A client sending wrong keys in a loop must show on the dashboards and in the logs without
flooding them: every failure is counted in `auth_failures_total`, and one WARNING
`auth_failed` line is written per client address and reason per interval, carrying the
number of failures it stood for since the previous one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from chatlens.observability.metrics import AUTH_FAILURE_REASONS, Metrics

log = structlog.get_logger(__name__)

# Why a request was refused (the `reason` label and field; docs/metrics.md): no key or an
# empty one; not in the shape of a chatlens key; the shape of a key but no such key; a
# revoked key; a token the external auth service said is invalid.
MISSING, MALFORMED, UNKNOWN_KEY, REVOKED, EXTERNAL_REFUSED = AUTH_FAILURE_REASONS

# Addresses tracked at once; past that, new ones share one entry (memory stays bounded
# whatever the number of addresses an attacker uses).
_MAX_SOURCES = 10_000
_OTHER_SOURCE = "other"


class AuthFailures:
    """Counts failures and decides which of them are logged: the first of each client
    address and reason in every `interval_s`, with the number suppressed since."""

    def __init__(
        self, *, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        # (source, reason) -> [time of its last line, failures since that line]
        self._windows: dict[tuple[str, str], list[float]] = {}

    def record(self, reason: str, *, source: str | None, metrics: Metrics | None) -> int | None:
        """Count a failure; log it if it is its source's first in the interval. Returns the
        number of failures the line stands for beside this one, None when not logged."""
        if metrics is not None:
            metrics.auth_failures.labels(reason).inc()
        now = self._clock()
        key = (source or "unknown", reason)
        window = self._windows.get(key)
        if window is None:
            key = self._room_for(key, now)
            window = self._windows.get(key)
        if window is not None and now - window[0] < self.interval_s:
            window[1] += 1
            return None
        suppressed = int(window[1]) if window is not None else 0
        self._windows[key] = [now, 0]
        log.warning(
            "auth_failed",
            reason=reason,
            client_ip=key[0],
            suppressed=suppressed,
            interval_s=self.interval_s,
        )
        return suppressed

    def _room_for(self, key: tuple[str, str], now: float) -> tuple[str, str]:
        if len(self._windows) < _MAX_SOURCES:
            return key
        expired = [k for k, (since, _) in self._windows.items() if now - since >= self.interval_s]
        for old in expired:
            del self._windows[old]
        return key if len(self._windows) < _MAX_SOURCES else (_OTHER_SOURCE, key[1])
