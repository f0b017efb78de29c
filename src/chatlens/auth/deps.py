"""Dependency aliases for who is calling: CurrentUser and AdminUser."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatlens.auth import keys
from chatlens.auth.external import AuthUnavailable, ExternalAuth
from chatlens.auth.service import KeyCache, Principal, authenticate, from_cache
from chatlens.db.session import SessionMakerDep
from chatlens.errors import Forbidden
from chatlens.observability.logging import bind
from chatlens.observability.metrics import Metrics

log = structlog.get_logger(__name__)

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer cl_...`")


async def current_user(
    request: Request,
    sessions: SessionMakerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials else None
    external: ExternalAuth | None = getattr(request.app.state, "external_auth", None)
    # With an external auth service, chatlens's own `cl_` keys still work (the CLI's
    # admin keys); every other bearer token is the auth service's to judge.
    if external is not None and token and not keys.looks_like_key(token):
        try:
            async with sessions() as session:  # users seen for the first time are created
                principal = await external.authenticate(session, token)
        except AuthUnavailable as exc:
            metrics: Metrics | None = getattr(request.app.state, "metrics", None)
            if metrics is not None:
                metrics.errors.labels(exc.error_type, "auth").inc()
            log.warning("auth_unavailable", reason=exc.message)
            raise
    else:
        cache: KeyCache | None = getattr(request.app.state, "key_cache", None)
        # A key in the cache needs no database: no session is opened for it.
        cached = from_cache(token, cache)
        if cached is not None:
            principal = cached
        else:
            async with sessions() as session:
                principal = await authenticate(session, token, cache=cache)
                await session.commit()  # the key's last use
    bind(user_id=str(principal.user_id))
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise Forbidden("this route is for administrators")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]
