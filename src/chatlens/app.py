"""The FastAPI application: built by create_app(settings), nothing happens at import."""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from prometheus_client import multiprocess
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from chatlens import __version__, state
from chatlens.analytics import sla
from chatlens.analytics.reports_router import router as analytics_reports_router
from chatlens.analytics.router import router as analytics_router
from chatlens.analytics.service import CriticalWords
from chatlens.auth.deps import Auth
from chatlens.auth.external import ExternalAuth
from chatlens.auth.router import admin as admin_router
from chatlens.auth.router import router as auth_router
from chatlens.auth.service import KeyCache
from chatlens.chat import tasks as chat_tasks
from chatlens.chat.pipeline import ChatPipeline
from chatlens.chat.router import router as chat_router
from chatlens.chat.v1_router import router as v1_router
from chatlens.console import router as console
from chatlens.db import migrate
from chatlens.db.availability import DatabaseOutage, install_database_error_handler
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.db.session import Database
from chatlens.errors import OPENAI_PREFIX, install_error_handlers
from chatlens.hardening import CorsMiddleware, SecurityHeadersMiddleware
from chatlens.health.deps import HealthState
from chatlens.health.profiling import RequestProfiling
from chatlens.health.profiling import router as profiling_router
from chatlens.health.router import router as health_router
from chatlens.inference import tasks as inference_tasks
from chatlens.inference.deps import Inference
from chatlens.inference.factory import create_backend
from chatlens.inference.pricing import load_pricing
from chatlens.inference.router import router as models_router
from chatlens.inference.service import ActiveModel
from chatlens.limits import BodySizeLimitMiddleware
from chatlens.observability.deps import Telemetry
from chatlens.observability.logging import LogStream, configure_logging
from chatlens.observability.metrics import Metrics, multiprocess_dir
from chatlens.observability.middleware import ObservabilityMiddleware
from chatlens.observability.profiling import Profiling
from chatlens.observability.request_stats import RequestStats
from chatlens.observability.router import router as metrics_router
from chatlens.observability.sentry import capture_log_errors, init_sentry
from chatlens.observability.tracing import configure_tracing, shutdown_tracing
from chatlens.responses import complete_error_responses
from chatlens.settings import Settings, load_settings
from chatlens.shutdown import Shutdown, draining_on_signals
from chatlens.state import AppState

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


async def _check_schema(engine: AsyncEngine, settings: Settings) -> None:
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


def _process_stopped(settings: Settings) -> None:
    log.info("service_stopped")
    shutdown_tracing()
    if multiprocess_dir(settings) is not None:
        # Live gauges of this worker stop counting once it is gone.
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _external_auth(settings: Settings, clock: Callable[[], float]) -> ExternalAuth | None:
    if settings.auth_validate_url is None:
        return None
    key = settings.auth_internal_api_key
    return ExternalAuth(
        url=settings.auth_validate_url,
        internal_api_key=key.get_secret_value() if key is not None else None,
        ttl_s=settings.auth_cache_ttl_seconds,
        negative_ttl_s=settings.auth_negative_ttl_seconds,
        maxsize=settings.auth_cache_size,
        timeout_s=settings.auth_timeout_seconds,
        clock=clock,
    )


def _describe_every_error(app: FastAPI) -> None:
    """The OpenAPI description with every error a route can answer (FastAPI's way to extend
    it: replace `app.openapi`, build once, keep the result)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_error_responses(build(), openai_prefix=OPENAI_PREFIX)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], float] = time.monotonic
) -> FastAPI:
    """Build the application; `uvicorn --factory chatlens.app:create_app` reads the environment.

    `clock` times the key and token caches' TTLs (tests advance their own).
    """
    settings = settings or load_settings()
    configure_process(settings)
    metrics = Metrics(settings=settings) if settings.metrics_enabled else None

    key_cache = (
        KeyCache(ttl_s=settings.api_key_cache_ttl_seconds, clock=clock)
        if settings.api_key_cache_ttl_seconds > 0
        else None
    )
    telemetry = Telemetry(metrics=metrics, request_stats=RequestStats())
    # What exists before the lifespan (the middleware counts with it); the lifespan adds the
    # parts it opens and takes them away again when it closes them.
    shutdown = Shutdown(settings.shutdown_grace_seconds)
    outage = DatabaseOutage(metrics)
    built = AppState(
        settings, telemetry, CriticalWords(settings.critical_word_list), shutdown, outage
    )
    # Profiling on demand: with it off, neither its route nor its middleware exists.
    profiling = Profiling() if settings.should_allow_profiling else None
    if profiling is not None:
        built = built.replace(profiling)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(_process_stopped, settings)
            stack.callback(state.install, app, built)
            pricing = load_pricing(settings.pricing_file)
            engine = create_engine(settings)
            stack.push_async_callback(engine.dispose)
            outage.open(engine)
            stack.push_async_callback(outage.aclose)
            backend = create_backend(settings)
            stack.push_async_callback(backend.aclose)
            external_auth = _external_auth(settings, clock)
            if external_auth is not None:
                stack.push_async_callback(external_auth.aclose)
            # Optional: state shared between replicas; its health is reported by /health.
            redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
            if redis is not None:
                stack.push_async_callback(redis.aclose)
            await _check_schema(engine, settings)
            sessionmaker = create_sessionmaker(engine)
            active_model = ActiveModel(backend)
            if metrics is not None:
                # Models keep their own label value when priced or active (docs/metrics.md).
                metrics.models.recognise(lambda name: pricing.price(name) is not None)
                metrics.models.recognise(lambda name: name == active_model.current)
            pipeline = ChatPipeline(
                active_model=active_model,
                sessionmaker=sessionmaker,
                history_messages=settings.history_messages,
                metrics=metrics,
                log_content=settings.log_message_content,
                pricing=pricing,
                shutdown=shutdown,
                outage=outage,
            )
            stack.push_async_callback(pipeline.aclose)  # answers still being written
            async with sessionmaker() as session:
                await active_model.load(session)
            # Each package starts its own loops; they stop in the reverse order.
            await stack.enter_async_context(
                sla.flushing(
                    telemetry.request_stats,
                    sessionmaker,
                    interval_s=settings.request_stats_flush_seconds,
                )
            )
            await stack.enter_async_context(
                inference_tasks.following_active_model(
                    active_model, sessionmaker, interval_s=settings.active_model_refresh_seconds
                )
            )
            if metrics is not None:
                metrics.app_info.labels(__version__, settings.environment.value).set(1)
                await stack.enter_async_context(
                    chat_tasks.gauging_active_conversations(
                        sessionmaker,
                        metrics,
                        window_s=settings.active_sessions_window_seconds,
                        interval_s=settings.active_sessions_refresh_seconds,
                    )
                )
                await stack.enter_async_context(
                    inference_tasks.gauging_health(
                        backend, metrics, interval_s=settings.active_sessions_refresh_seconds
                    )
                )
            state.install(
                app,
                built.replace(
                    Database(engine=engine, sessionmaker=sessionmaker),
                    Inference(backend=backend, active_model=active_model),
                    Auth(key_cache=key_cache, external=external_auth),
                    HealthState(started_at=time.monotonic(), redis=redis),
                    pipeline,
                ),
            )
            # Last in, first out: on SIGTERM answers drain before anything above closes.
            await stack.enter_async_context(draining_on_signals(shutdown))
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

    app = FastAPI(
        title="chatlens",
        version=__version__,
        summary="AI customer-support chat service, observable from the first request",
        lifespan=lifespan,
        # Served by the console package from vendored files, not from a CDN.
        docs_url=None,
        redoc_url=None,
        # Off in production unless CHATLENS_DOCS_ENABLED says otherwise: the description
        # maps every route for whoever asks.
        openapi_url="/openapi.json" if settings.should_serve_docs else None,
        # FastAPI's own telemetry would add a second server span and a span per dependency;
        # ObservabilityMiddleware is the single, leaner source of spans, metrics and logs.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    state.install(app, built)
    install_error_handlers(app)
    install_database_error_handler(app)
    _describe_every_error(app)
    app.include_router(v1_router)
    app.include_router(chat_router)
    app.include_router(models_router)
    app.include_router(analytics_router)
    app.include_router(analytics_reports_router)
    app.include_router(auth_router)
    app.include_router(admin_router)
    app.include_router(health_router)
    app.include_router(metrics_router)
    app.include_router(console.router)
    if settings.should_serve_docs:
        app.include_router(console.docs_router)
    app.mount(console.STATIC_PATH, console.static_files(), name=console.STATIC_NAME)
    if profiling is not None:
        app.include_router(profiling_router)
        app.add_middleware(RequestProfiling, profiling=profiling)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Inside the observability layer: preflights are requests like any other in the metrics.
    app.add_middleware(CorsMiddleware, allow_origins=settings.cors_origin_list)
    # Added last, so outermost: every response, a 413 or a 500 included, is counted and
    # carries the request and trace ids.
    app.add_middleware(
        ObservabilityMiddleware,
        routes=app.router.routes,
        metrics=metrics,
        tracing=settings.tracing_enabled,
        access_log=settings.access_log,
        request_stats=telemetry.request_stats,
    )
    # Outermost of all, so that the 500 the observability layer writes gets them too.
    app.add_middleware(SecurityHeadersMiddleware)
    return app
