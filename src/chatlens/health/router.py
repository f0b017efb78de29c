"""Liveness and readiness for load balancers and Kubernetes probes (no auth)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from chatlens.db import migrate

router = APIRouter(prefix="/health", tags=["health"])

_READY_TIMEOUT_S = 1.0


@router.get("/live")
async def live() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "alive"}


@router.get("/ready", responses={503: {"description": "Not ready: database down or schema behind"}})
async def ready(request: Request, response: Response) -> dict[str, str]:
    """200 when the database answers within 1 s and its schema is at the newest migration."""
    engine: AsyncEngine = request.app.state.engine

    async def check() -> str:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return "ok" if await migrate.is_at_head(engine) else "schema_not_at_head"

    try:
        state = await asyncio.wait_for(check(), _READY_TIMEOUT_S)
    except Exception:
        state = "database_unavailable"
    if state != "ok":
        response.status_code = 503
        return {"status": "not_ready", "reason": state}
    return {"status": "ready"}
