"""Dependency alias for what only the health checks read: HealthStateDep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from chatlens.shutdown import Shutdown
from chatlens.state import state_of


@dataclass(frozen=True, slots=True)
class HealthState:
    """The application state's health part: the process's start and the optional Redis."""

    started_at: float  # time.monotonic() when the lifespan finished starting
    redis: Redis | None  # state shared between replicas, when configured


async def get_health_state(request: Request) -> HealthState:
    return state_of(request).get(HealthState)


HealthStateDep = Annotated[HealthState, Depends(get_health_state)]


async def get_shutdown(request: Request) -> Shutdown:
    return state_of(request).get(Shutdown)


ShutdownDep = Annotated[Shutdown, Depends(get_shutdown)]
