"""The inference side's background work: the model swapped elsewhere, the backend's gauge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatlens.inference.base import InferenceBackend
from chatlens.inference.breaker import BreakerState, CircuitBreaker
from chatlens.inference.service import ActiveModel
from chatlens.observability.metrics import Metrics
from chatlens.periodic import every

log = structlog.get_logger(__name__)


@asynccontextmanager
async def following_active_model(
    active_model: ActiveModel,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    interval_s: float,
) -> AsyncIterator[None]:
    """Adopt a model swapped on another replica; the swap is stored in the database."""

    async def load() -> None:
        try:
            async with sessionmaker() as session:
                await active_model.load(session)
        except Exception as exc:  # the database may be down; /health says so
            log.warning("active_model_not_read", error=type(exc).__name__)

    async with every(interval_s, load):
        yield


@asynccontextmanager
async def gauging_health(
    backend: InferenceBackend, metrics: Metrics, *, interval_s: float
) -> AsyncIterator[None]:
    """inference_up: the backend's health check, at once and every `interval_s` seconds, and
    its circuit breaker's changes as they happen."""
    gauge = metrics.inference_up.labels(backend.name)
    _watch_breaker(backend, metrics)

    async def refresh() -> None:
        try:
            health = await backend.health()
            gauge.set(1 if health.ok else 0)
        except Exception as exc:  # a refresh must never stop the loop
            gauge.set(0)
            log.warning("gauge_refresh_failed", gauge="inference_up", error_type=type(exc).__name__)

    async with every(interval_s, refresh, now=True):
        yield


def _watch_breaker(backend: InferenceBackend, metrics: Metrics) -> None:
    """inference_up follows the upstream's circuit breaker at once, not at the next refresh."""
    upstream = getattr(backend, "primary", backend)
    breaker = getattr(upstream, "breaker", None)
    if isinstance(breaker, CircuitBreaker):
        gauge = metrics.inference_up.labels(backend.name)

        def on_change(state: BreakerState) -> None:
            gauge.set(0 if state is BreakerState.open else 1)

        breaker.on_change = on_change
