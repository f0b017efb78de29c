"""Dependency aliases for who is calling: CurrentUser, AdminUser and KeyCacheDep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatlens.auth import service
from chatlens.auth.external import ExternalAuth
from chatlens.auth.service import KeyCache, Principal
from chatlens.db.session import SessionDep
from chatlens.errors import Forbidden
from chatlens.observability.deps import MetricsDep
from chatlens.observability.logging import bind
from chatlens.state import state_of

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer cl_...`")


@dataclass(frozen=True, slots=True)
class Auth:
    """The application state's auth part: the key cache and the external auth service."""

    key_cache: KeyCache | None  # None with CHATLENS_API_KEY_CACHE_TTL_SECONDS=0
    external: ExternalAuth | None  # set by CHATLENS_AUTH_VALIDATE_URL


async def get_auth(request: Request) -> Auth:
    return state_of(request).get(Auth)


async def get_key_cache(request: Request) -> KeyCache | None:
    return state_of(request).get(Auth).key_cache


async def current_user(
    request: Request,
    session: SessionDep,
    metrics: MetricsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    auth = state_of(request).get(Auth)
    principal = await service.identify(
        session,
        credentials.credentials if credentials else None,
        cache=auth.key_cache,
        external=auth.external,
        metrics=metrics,
    )
    bind(user_id=str(principal.user_id))
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise Forbidden("this route is for administrators")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]
KeyCacheDep = Annotated[KeyCache | None, Depends(get_key_cache)]
