"""How an upstream model's failures reach our clients: status, type and Retry-After."""

from __future__ import annotations

import math

from chatlens.errors import ChatlensError


class UpstreamError(ChatlensError):
    """The model behind chatlens failed; subclasses say how."""

    status_code = 502
    error_type = "upstream_error"
    # Counted against the circuit breaker: the upstream is unwell, not the request.
    breaker_failure = True


class UpstreamBadResponse(UpstreamError):
    """5xx, invalid JSON or a stream that broke off: 502."""


class UpstreamTimeout(UpstreamError):
    status_code = 504
    error_type = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    """Unreachable, rate-limited or the circuit is open: 503 with Retry-After."""

    status_code = 503
    error_type = "upstream_unavailable"

    def __init__(self, message: str, *, retry_after_s: float, breaker_failure: bool = True) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(message, headers={"Retry-After": str(seconds)})
        self.retry_after_s = seconds
        self.breaker_failure = breaker_failure


class UpstreamRejected(UpstreamError):
    """The upstream refused the request itself (4xx, e.g. context too long): 400 with its words."""

    status_code = 400
    error_type = "upstream_rejected"
    breaker_failure = False
