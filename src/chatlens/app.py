"""The FastAPI application: built by create_app(settings), nothing happens at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from redis.asyncio import Redis

from chatlens import __version__
from chatlens.auth.router import admin as admin_router
from chatlens.auth.router import router as auth_router
from chatlens.chat.router import router as chat_router
from chatlens.chat.service import ChatPipeline
from chatlens.db import migrate
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.errors import install_error_handlers
from chatlens.health.router import router as health_router
from chatlens.inference.factory import create_backend
from chatlens.limits import BodySizeLimitMiddleware
from chatlens.observability.middleware import RequestContextMiddleware
from chatlens.settings import Settings, load_settings

log = structlog.get_logger(__name__)


class SchemaMissingError(RuntimeError):
    """The database was never migrated."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; `uvicorn --factory chatlens.app:create_app` reads the environment."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = create_backend(settings)
        engine = create_engine(settings)
        # Optional: state shared between replicas; its health is reported by /health.
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        app.state.redis = redis
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
            app.state.pipeline = ChatPipeline(
                backend=backend,
                sessionmaker=sessionmaker,
                history_messages=settings.history_messages,
            )
            log.info(
                "service_started",
                backend=backend.name,
                database=settings.database.get_backend_name(),
            )
            yield
        finally:
            if redis is not None:
                await redis.aclose()
            await backend.aclose()
            await engine.dispose()
            log.info("service_stopped")

    app = FastAPI(
        title="chatlens",
        version=__version__,
        summary="AI customer-support chat service, observable from the first request",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(chat_router)
    app.include_router(auth_router)
    app.include_router(admin_router)
    app.include_router(health_router)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Added last, so outermost: every response, a 413 or a 500 included, carries the id.
    app.add_middleware(RequestContextMiddleware)
    return app
