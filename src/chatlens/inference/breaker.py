"""A circuit breaker for the upstream model: stop calling a backend that keeps failing."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

import structlog

log = structlog.get_logger(__name__)


class BreakerState(StrEnum):
    closed = "closed"  # calls go through
    open = "open"  # calls fail at once until the reset time has passed
    half_open = "half_open"  # one probe call is let through; its result decides


class CircuitBreaker:
    """Opens after `failures` consecutive failures for `reset_s`, then lets one probe through.

    A successful probe closes it; a failed one opens it again for another `reset_s`.
    `on_change(state)` is called on every transition (the `inference_up` gauge, say).
    """

    def __init__(
        self,
        *,
        failures: int,
        reset_s: float,
        name: str = "upstream",
        on_change: Callable[[BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.reset_s = reset_s
        self.name = name
        self.on_change = on_change
        self._clock = clock
        self.state = BreakerState.closed
        self.consecutive_failures = 0
        self._opened_at = 0.0
        self._probing = False

    def retry_after(self) -> float | None:
        """None when a call may go ahead now (claiming the probe if half-open), else seconds."""
        if self.state is BreakerState.closed:
            return None
        now = self._clock()
        if self.state is BreakerState.open:
            remaining = self._opened_at + self.reset_s - now
            if remaining > 0:
                return remaining
            self._set(BreakerState.half_open)
        if self._probing:
            return self.reset_s  # another call is the probe; its outcome is not known yet
        self._probing = True
        return None

    def success(self) -> None:
        self.consecutive_failures = 0
        self._probing = False
        if self.state is not BreakerState.closed:
            self._set(BreakerState.closed)

    def failure(self) -> None:
        self.consecutive_failures += 1
        self._probing = False
        if self.state is BreakerState.half_open or (
            self.state is BreakerState.closed and self.consecutive_failures >= self.threshold
        ):
            self._opened_at = self._clock()
            self._set(BreakerState.open)

    def release(self) -> None:
        """A call that neither succeeded nor failed (a client went away): free the probe."""
        self._probing = False

    def _set(self, state: BreakerState) -> None:
        previous, self.state = self.state, state
        event = "circuit_opened" if state is BreakerState.open else f"circuit_{state.value}"
        emit = log.warning if state is BreakerState.open else log.info
        emit(
            event,
            backend=self.name,
            previous=previous.value,
            consecutive_failures=self.consecutive_failures,
            reset_seconds=self.reset_s,
        )
        if self.on_change is not None:
            self.on_change(state)
