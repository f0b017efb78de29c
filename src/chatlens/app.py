"""The FastAPI application: built by create_app(settings), nothing happens at import."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from prometheus_client import multiprocess
from redis.asyncio import Redis

from chatlens import __version__
from chatlens.analytics import sla
from chatlens.analytics.router import router as analytics_router
from chatlens.analytics.service import CriticalWords
from chatlens.auth.external import ExternalAuth
from chatlens.auth.router import admin as admin_router
from chatlens.auth.router import router as auth_router
from chatlens.auth.service import KeyCache
from chatlens.chat import conversations
from chatlens.chat.pipeline import ChatPipeline
from chatlens.chat.router import router as chat_router
from chatlens.chat.v1_router import router as v1_router
from chatlens.console import router as console
from chatlens.db import migrate
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.errors import install_error_handlers
from chatlens.health.router import router as health_router
from chatlens.inference.base import InferenceBackend
from chatlens.inference.breaker import BreakerState, CircuitBreaker
from chatlens.inference.factory import create_backend
from chatlens.inference.pricing import load_pricing
from chatlens.inference.router import router as models_router
from chatlens.inference.service import ActiveModel
from chatlens.limits import BodySizeLimitMiddleware
from chatlens.observability.logging import LogStream, configure_logging
from chatlens.observability.metrics import Metrics, multiprocess_dir
from chatlens.observability.middleware import ObservabilityMiddleware
from chatlens.observability.request_stats import RequestStats
from chatlens.observability.router import router as metrics_router
from chatlens.observability.sentry import capture_log_errors, init_sentry
from chatlens.observability.tracing import configure_tracing, shutdown_tracing
from chatlens.settings import Settings, load_settings

log = structlog.get_logger(__name__)

SERVICE_NAME = "chatlens"


class SchemaMissingError(RuntimeError):
    """The database was never migrated."""


def configure_process(settings: Settings, *, log_stream: LogStream | None = None) -> None:
    """Error reporting, logging and tracing for this process (the CLI calls it first, too).

    Log lines go to `log_stream`, stdout by default (the service's own).
    """
    # Before logging, so that no error line is logged while Sentry is not yet listening.
    init_sentry(settings)
    configure_logging(
        level=settings.log_level,
        fmt=settings.log_format,
        service=SERVICE_NAME,
        version=__version__,
        environment=settings.environment.value,
        # Present even with Sentry off, where it returns at once: structlog keeps the
        # processors a logger had at its first use, so one added later would be missed.
        extra=[capture_log_errors],
        stream=log_stream,
        sql_echo=settings.database_echo,
    )
    if settings.tracing_enabled:
        configure_tracing(
            service=SERVICE_NAME,
            version=__version__,
            environment=settings.environment.value,
            otlp_endpoint=settings.otel_exporter_otlp_endpoint,
        )


async def _refresh_gauges(
    app: FastAPI, metrics: Metrics, backend: InferenceBackend, settings: Settings
) -> None:
    """Every replica reports the same active_sessions: it is read from the database."""
    while True:
        try:
            count = await conversations.count_active_conversations(
                app.state.sessionmaker, window_s=settings.active_sessions_window_s
            )
            metrics.active_sessions.set(count)
        except Exception as exc:  # a refresh must never stop the loop
            log.warning(
                "gauge_refresh_failed", gauge="active_sessions", error_type=type(exc).__name__
            )
        try:
            health = await backend.health()
            metrics.inference_up.labels(backend.name).set(1 if health.ok else 0)
        except Exception as exc:
            metrics.inference_up.labels(backend.name).set(0)
            log.warning("gauge_refresh_failed", gauge="inference_up", error_type=type(exc).__name__)
        await asyncio.sleep(settings.active_sessions_refresh_s)


async def _flush_request_stats(app: FastAPI, interval_s: float) -> None:
    """Every `interval_s`, this process's per-minute request counts go to request_stats."""
    while True:
        await asyncio.sleep(interval_s)
        with contextlib.suppress(Exception):  # logged by flush; the counts are kept for later
            await sla.flush(app.state.request_stats, app.state.sessionmaker)


async def _follow_active_model(app: FastAPI, interval_s: float) -> None:
    """Adopt a model swapped on another replica; the swap is stored in the database."""
    active_model: ActiveModel = app.state.active_model
    while True:
        await asyncio.sleep(interval_s)
        try:
            async with app.state.sessionmaker() as session:
                await active_model.load(session)
        except Exception as exc:  # the database may be down; /health says so
            log.warning("active_model_not_read", error=type(exc).__name__)


def _external_auth(settings: Settings, clock: Callable[[], float]) -> ExternalAuth | None:
    if settings.auth_validate_url is None:
        return None
    key = settings.auth_internal_api_key
    return ExternalAuth(
        url=settings.auth_validate_url,
        internal_api_key=key.get_secret_value() if key is not None else None,
        ttl_s=settings.auth_cache_ttl_s,
        negative_ttl_s=settings.auth_negative_ttl_s,
        maxsize=settings.auth_cache_size,
        timeout_s=settings.auth_timeout_s,
        clock=clock,
    )


def _watch_breaker(backend: InferenceBackend, metrics: Metrics) -> None:
    """inference_up follows the upstream's circuit breaker at once, not at the next refresh."""
    upstream = getattr(backend, "primary", backend)
    breaker = getattr(upstream, "breaker", None)
    if isinstance(breaker, CircuitBreaker):
        gauge = metrics.inference_up.labels(backend.name)

        def on_change(state: BreakerState) -> None:
            gauge.set(0 if state is BreakerState.open else 1)

        breaker.on_change = on_change


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], float] = time.monotonic
) -> FastAPI:
    """Build the application; `uvicorn --factory chatlens.app:create_app` reads the environment.

    `clock` times the key and token caches' TTLs (tests advance their own).
    """
    settings = settings or load_settings()
    configure_process(settings)
    metrics = Metrics() if settings.metrics_enabled else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pricing = load_pricing(settings.pricing_file)
        backend = create_backend(settings)
        if metrics is not None:
            _watch_breaker(backend, metrics)
        engine = create_engine(settings)
        # Optional: state shared between replicas; its health is reported by /health.
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        app.state.redis = redis
        external_auth = _external_auth(settings, clock)
        app.state.external_auth = external_auth
        refresher: asyncio.Task[None] | None = None
        follower: asyncio.Task[None] | None = None
        flusher: asyncio.Task[None] | None = None
        try:
            revision = await migrate.current_revision(engine)
            if revision is None and settings.should_auto_migrate:
                await migrate.upgrade(settings)
            elif revision is None:
                raise SchemaMissingError(
                    "the database has no chatlens schema: run `chatlens db upgrade` "
                    "(or set CHATLENS_AUTO_MIGRATE=true)"
                )
            elif revision != migrate.head_revision():
                # Serve anyway (a rolling deploy may run old and new code side by side);
                # /health/ready reports 503 until the schema matches.
                log.warning("schema_not_at_head", revision=revision, head=migrate.head_revision())
            sessionmaker = create_sessionmaker(engine)
            app.state.engine = engine
            app.state.sessionmaker = sessionmaker
            app.state.backend = backend
            active_model = ActiveModel(backend)
            app.state.active_model = active_model
            app.state.pipeline = ChatPipeline(
                active_model=active_model,
                sessionmaker=sessionmaker,
                history_messages=settings.history_messages,
                metrics=metrics,
                log_content=settings.log_message_content,
                pricing=pricing,
            )
            async with sessionmaker() as session:
                await active_model.load(session)
            follower = asyncio.create_task(
                _follow_active_model(app, settings.active_model_refresh_s)
            )
            flusher = asyncio.create_task(_flush_request_stats(app, settings.request_stats_flush_s))
            if metrics is not None:
                metrics.app_info.labels(__version__, settings.environment.value).set(1)
                refresher = asyncio.create_task(_refresh_gauges(app, metrics, backend, settings))
            app.state.started_at = time.monotonic()
            # Start-up objects (modules, the knowledge-base index, pydantic schemas) live as
            # long as the process; freezing them keeps full collections from re-walking them.
            gc.freeze()
            log.info(
                "service_started",
                backend=backend.name,
                database=settings.database.get_backend_name(),
                pid=os.getpid(),
            )
            yield
        finally:
            for task in (refresher, follower, flusher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if flusher is not None:
                # The last seconds' counts too: the SLA survives restarts.
                with contextlib.suppress(Exception):
                    await sla.flush(app.state.request_stats, app.state.sessionmaker)
            pipeline = getattr(app.state, "pipeline", None)
            if pipeline is not None:
                await pipeline.aclose()  # answers still being written
            if redis is not None:
                await redis.aclose()
            if external_auth is not None:
                await external_auth.aclose()
            await backend.aclose()
            await engine.dispose()
            log.info("service_stopped")
            shutdown_tracing()
            if multiprocess_dir() is not None:
                # Live gauges of this worker stop counting once it is gone.
                multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    app = FastAPI(
        title="chatlens",
        version=__version__,
        summary="AI customer-support chat service, observable from the first request",
        lifespan=lifespan,
        # Served by the console package from vendored files, not from a CDN.
        docs_url=None,
        redoc_url=None,
        # FastAPI's own telemetry would add a second server span and a span per dependency;
        # ObservabilityMiddleware is the single, leaner source of spans, metrics and logs.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.critical_words = CriticalWords(settings.critical_word_list)
    app.state.key_cache = (
        KeyCache(ttl_s=settings.api_key_cache_ttl_s, clock=clock)
        if settings.api_key_cache_ttl_s > 0
        else None
    )
    request_stats = RequestStats()
    app.state.request_stats = request_stats
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(v1_router)
    app.include_router(chat_router)
    app.include_router(models_router)
    app.include_router(analytics_router)
    app.include_router(auth_router)
    app.include_router(admin_router)
    app.include_router(health_router)
    app.include_router(metrics_router)
    app.include_router(console.router)
    app.include_router(console.docs_router)
    app.mount(console.STATIC_PATH, console.static_files(), name=console.STATIC_NAME)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Added last, so outermost: every response, a 413 or a 500 included, is counted and
    # carries the request and trace ids.
    app.add_middleware(
        ObservabilityMiddleware,
        routes=app.router.routes,
        metrics=metrics,
        tracing=settings.tracing_enabled,
        access_log=settings.access_log,
        request_stats=request_stats,
    )
    return app
