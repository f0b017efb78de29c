"""Dependency aliases for who is calling: CurrentUser, AdminUser and KeyCacheDep."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatlens.auth import service
from chatlens.auth.external import ExternalAuth
from chatlens.auth.failures import AuthFailures
from chatlens.auth.service import KeyCache, Principal
from chatlens.db.session import Database, SessionDep
from chatlens.errors import Forbidden, is_body_decoding_error
from chatlens.observability.deps import MetricsDep, Telemetry
from chatlens.observability.logging import bind
from chatlens.state import state_of

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer cl_...`")


@dataclass(frozen=True, slots=True)
class Auth:
    """The application state's auth part: the key cache and the external auth service."""

    key_cache: KeyCache | None  # None with CHATLENS_API_KEY_CACHE_TTL_SECONDS=0
    external: ExternalAuth | None  # set by CHATLENS_AUTH_VALIDATE_URL
    failures: AuthFailures = field(default_factory=AuthFailures)  # counted, sampled in logs


async def get_auth(request: Request) -> Auth:
    return state_of(request).get(Auth)


async def get_key_cache(request: Request) -> KeyCache | None:
    return state_of(request).get(Auth).key_cache


# A request whose key was judged before routing (an admin's profile flag is checked in a
# middleware): the verdict, a Principal or the error, kept in the ASGI scope so the route
# neither asks again (an external auth service twice) nor counts a refusal twice.
AUTH_VERDICT = "chatlens.auth_verdict"


def _verdict(request: Request) -> Principal | None:
    verdict = request.scope.get(AUTH_VERDICT)
    if isinstance(verdict, Exception):
        raise verdict
    return verdict if isinstance(verdict, Principal) else None


async def current_user(
    request: Request,
    session: SessionDep,
    metrics: MetricsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if (judged := _verdict(request)) is not None:
        bind(user_id=str(judged.user_id))
        return judged
    auth = state_of(request).get(Auth)
    principal = await service.identify(
        session,
        credentials.credentials if credentials else None,
        cache=auth.key_cache,
        external=auth.external,
        metrics=metrics,
        failed=auth.failures,
        source=request.client.host if request.client else None,
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


async def _authenticate(request: Request) -> None:
    """`current_user` for a request refused before its dependencies run: Unauthorized
    without a valid key."""
    if _verdict(request) is not None:
        return
    credentials = await _bearer(request)
    auth = state_of(request).get(Auth)
    async with state_of(request).get(Database).sessionmaker() as session:
        await service.identify(
            session,
            credentials.credentials if credentials else None,
            cache=auth.key_cache,
            external=auth.external,
            metrics=state_of(request).get(Telemetry).metrics,
            failed=auth.failures,
            source=request.client.host if request.client else None,
        )


class AuthenticatedRoute(APIRoute):
    """A route that needs an API key and answers 401 before it says anything about a body
    it cannot read.

    FastAPI decodes the JSON body before it solves dependencies, so a malformed body would
    be refused (400) to a caller without a key; here the key is checked first. It is the
    route class of routers whose every route takes `CurrentUser` or `AdminUser`: the class
    is the marker (tests/test_contract.py checks that each such route asks for a key in the
    description).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authenticated_first(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                if is_body_decoding_error(exc):
                    await _authenticate(request)  # raises Unauthorized
                raise

        return authenticated_first
