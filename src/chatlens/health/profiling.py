"""Profiling on demand, for admins: `GET /api/admin/profile` samples the worker for N seconds;
`X-Chatlens-Profile: html|speedscope` (or `?profile=`) on any request answers with that
request's profile instead of its response. Both exist only with CHATLENS_PROFILING_ENABLED."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatlens import state
from chatlens.auth.deps import AUTH_VERDICT, AdminUser, Auth
from chatlens.auth.service import identify
from chatlens.db.session import Database
from chatlens.errors import ChatlensError, Conflict, error_response
from chatlens.observability.deps import Telemetry
from chatlens.observability.profiling import (
    FORMATS,
    MEDIA_TYPES,
    ProfileFormat,
    ProfilerBusy,
    Profiling,
    render,
)
from chatlens.responses import errors

log = structlog.get_logger(__name__)

PROFILE_HEADER = "x-chatlens-profile"
PROFILE_QUERY = "profile"
PROFILED_STATUS_HEADER = "X-Chatlens-Profiled-Status"
MAX_SECONDS = 120.0

router = APIRouter(prefix="/api/admin", tags=["admin"], responses=errors(401, 403))


async def get_profiling(request: Request) -> Profiling:
    return state.state_of(request).get(Profiling)


ProfilingDep = Annotated[Profiling, Depends(get_profiling)]


@router.get(
    "/profile",
    response_class=Response,
    responses={
        200: {
            "description": "The profile: pyinstrument's page, or speedscope's JSON",
            "content": {MEDIA_TYPES["html"]: {}, MEDIA_TYPES["speedscope"]: {}},
        },
        **errors(409, 422),
    },
)
async def profile(
    _: AdminUser,
    profiling: ProfilingDep,
    seconds: Annotated[float, Query(gt=0, le=MAX_SECONDS, description="How long to sample")] = 10,
    format: Annotated[ProfileFormat, Query(description="html, or speedscope's JSON")] = "html",
) -> Response:
    """A sampling profile of this worker's event loop: every request it serves meanwhile."""
    try:
        profiler = await profiling.sample(seconds)
    except ProfilerBusy as exc:
        raise Conflict(str(exc)) from None
    body, headers = render(profiler, format)
    return Response(body, headers=headers)


def requested_format(scope: Scope) -> ProfileFormat | None:
    """The profile a request asks for, by header or query parameter; None when none."""
    wanted = Headers(scope=scope).get(PROFILE_HEADER)
    if wanted is None and scope.get("query_string"):
        wanted = QueryParams(scope["query_string"]).get(PROFILE_QUERY)
    if wanted is None:
        return None
    wanted = wanted.strip().lower()
    if wanted in ("", "1", "true"):
        return "html"
    return next((fmt for fmt in FORMATS if fmt == wanted), None)


async def _from_admin(scope: Scope) -> bool:
    """Whether the request's key is an admin's, judged as the routes judge it: a refused key
    is counted and logged as any other. Whatever fails here (a database outage included)
    leaves the request to be served, and judged, as usual."""
    headers = Headers(scope=scope)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    parts = state.of(scope["app"])
    auth = parts.get(Auth)
    client = scope.get("client")
    try:
        async with parts.get(Database).sessionmaker() as session:
            principal = await identify(
                session,
                token.strip(),
                cache=auth.key_cache,
                external=auth.external,
                metrics=parts.get(Telemetry).metrics,
                failed=auth.failures,
                source=client[0] if client else None,
            )
    except ChatlensError as refused:
        scope[AUTH_VERDICT] = refused  # the route answers with it, counted once
        return False
    except Exception as exc:
        log.debug("profile_flag_not_judged", error_type=type(exc).__name__)
        return False
    scope[AUTH_VERDICT] = principal  # the route does not look the key up again
    return principal.is_admin


class RequestProfiling:
    """Answers an admin's request that asks for its profile with that profile; the route's
    own status is in X-Chatlens-Profiled-Status. Anyone else's flag is ignored."""

    def __init__(self, app: ASGIApp, *, profiling: Profiling) -> None:
        self.app = app
        self.profiling = profiling

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (fmt := requested_format(scope)) is None:
            await self.app(scope, receive, send)
            return
        if not await _from_admin(scope):
            await self.app(scope, receive, send)
            return
        status = 0

        async def keep_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        try:
            async with self.profiling.running(whole_loop=False) as profiler:
                await self.app(scope, receive, keep_status)
        except ProfilerBusy as exc:
            response = error_response(409, Conflict.error_type, str(exc))
            await response(scope, receive, send)
            return
        body, headers = render(profiler, fmt)
        headers[PROFILED_STATUS_HEADER] = str(status)
        await Response(body, headers=headers)(scope, receive, send)
