"""Dependency aliases for this process's telemetry: MetricsDep and RequestStatsDep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from chatlens.observability.metrics import Metrics
from chatlens.observability.request_stats import RequestStats
from chatlens.state import state_of


@dataclass(frozen=True, slots=True)
class Telemetry:
    """The application state's telemetry part, built with the app (the middleware needs it)."""

    metrics: Metrics | None  # None with CHATLENS_METRICS_ENABLED=false
    request_stats: RequestStats


async def get_metrics(request: Request) -> Metrics | None:
    return state_of(request).get(Telemetry).metrics


async def get_request_stats(request: Request) -> RequestStats:
    return state_of(request).get(Telemetry).request_stats


MetricsDep = Annotated[Metrics | None, Depends(get_metrics)]
RequestStatsDep = Annotated[RequestStats, Depends(get_request_stats)]
