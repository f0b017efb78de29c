"""Dependency aliases for who is calling: CurrentUser and AdminUser."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatlens.auth.service import Principal, authenticate
from chatlens.db.session import SessionDep
from chatlens.errors import Forbidden
from chatlens.observability.logging import bind

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer cl_...`")


async def current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    principal = await authenticate(session, credentials.credentials if credentials else None)
    bind(user_id=str(principal.user_id))
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise Forbidden("this route is for administrators")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]
