"""Liveness, readiness and service health for load balancers, probes and people (no auth)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from chatlens.db.session import DatabaseDep
from chatlens.health import service
from chatlens.health.deps import HealthStateDep, ShutdownDep
from chatlens.health.service import NotReadyReason, OverallStatus, Status
from chatlens.inference.deps import BackendDep

router = APIRouter(prefix="/health", tags=["health"])


class LivenessRead(BaseModel):
    status: Literal["alive"] = "alive"


class ReadinessRead(BaseModel):
    status: Literal["ready", "not_ready"]
    reason: NotReadyReason | None = Field(None, description="Set when not ready.")


class DatabaseHealthRead(BaseModel):
    status: Status
    latency_ms: float = Field(description="Time of a SELECT 1, in milliseconds.")


class ServiceHealthRead(BaseModel):
    status: Status
    latency_ms: float = Field(description="Time of the check, in milliseconds.")
    error: str | None = Field(
        None, description="Exception class and a generic phrase; set when unhealthy."
    )


class ServicesRead(BaseModel):
    database: ServiceHealthRead
    redis: ServiceHealthRead | None = Field(None, description="Present when Redis is configured.")
    ai_service: ServiceHealthRead


class HealthRead(BaseModel):
    status: OverallStatus = Field(
        description="unhealthy when the database or the AI service is down (503); "
        "degraded when only Redis is down (200)."
    )
    timestamp: datetime = Field(description="UTC, ISO 8601.")
    version: str
    uptime_seconds: float
    services: ServicesRead


@router.get("/live", response_model=LivenessRead)
async def live() -> LivenessRead:
    """200 while the process serves requests."""
    return LivenessRead()


@router.get(
    "/ready",
    response_model=ReadinessRead,
    response_model_exclude_none=True,
    responses={
        503: {
            "model": ReadinessRead,
            "description": "Not ready: shutting down, database down or schema behind",
        }
    },
)
async def ready(database: DatabaseDep, response: Response, shutdown: ShutdownDep) -> ReadinessRead:
    """200 when the database answers within 1 s and its schema is at the newest migration;
    503 from the moment the service is asked to stop."""
    reason = "shutting_down" if shutdown.draining else await service.readiness(database.engine)
    if reason is not None:
        response.status_code = 503
        return ReadinessRead(status="not_ready", reason=reason)
    return ReadinessRead(status="ready")


@router.get(
    "/db",
    response_model=DatabaseHealthRead,
    responses={
        503: {"model": DatabaseHealthRead, "description": "The database did not answer within 1 s"}
    },
)
async def database(database: DatabaseDep, response: Response) -> DatabaseHealthRead:
    """Database round trip (SELECT 1) and its latency; 503 when it fails."""
    result = await service.check_database(database.engine)
    if not result.ok:
        response.status_code = 503
    return DatabaseHealthRead(status=result.status, latency_ms=result.latency_ms)


@router.get(
    "",
    response_model=HealthRead,
    response_model_exclude_none=True,
    responses={
        503: {
            "model": HealthRead,
            "description": "Unhealthy: the database or the AI service is down",
        }
    },
)
async def health(
    database: DatabaseDep, backend: BackendDep, state: HealthStateDep, response: Response
) -> HealthRead:
    """Health of the database, Redis (when configured) and the AI service; 503 when unhealthy."""
    result = await service.overall(
        database.engine, backend, state.redis, started_at=state.started_at
    )
    response.status_code = result.http_status
    redis = result.services.get("redis")
    return HealthRead(
        status=result.status,
        timestamp=result.timestamp,
        version=result.version,
        uptime_seconds=result.uptime_seconds,
        services=ServicesRead(
            database=_read(result.services["database"]),
            redis=None if redis is None else _read(redis),
            ai_service=_read(result.services["ai_service"]),
        ),
    )


def _read(health: service.ServiceHealth) -> ServiceHealthRead:
    return ServiceHealthRead(status=health.status, latency_ms=health.latency_ms, error=health.error)
