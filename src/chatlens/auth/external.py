"""Bearer tokens checked by an external auth service (CHATLENS_AUTH_VALIDATE_URL).

The contract: `GET {url}` with `Authorization: Bearer <token>` and
`X-Internal-API-Key: <CHATLENS_AUTH_INTERNAL_API_KEY>`; the service answers 200
`{"user_id": str, "is_admin": bool}` for a valid token and 401 (or 403) for any other.
Answers are cached in-process by the token's SHA-256 (never the token): valid ones for
CHATLENS_AUTH_CACHE_TTL_SECONDS, invalid ones for CHATLENS_AUTH_NEGATIVE_TTL_SECONDS.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog
from cachetools import TLRUCache
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.auth import repository as repo
from chatlens.auth.service import AuthUnavailable, Principal
from chatlens.errors import Unauthorized
from chatlens.models import User
from chatlens.observability.tracing import HttpClientSpan

log = structlog.get_logger(__name__)

INTERNAL_KEY_HEADER = "X-Internal-API-Key"


@dataclass(frozen=True, slots=True)
class _Invalid:
    """A cached "no" from the auth service."""


_INVALID = _Invalid()


class ExternalAuth:
    """Validates tokens at the auth service, caching answers; creates users on first sight."""

    def __init__(
        self,
        *,
        url: str,
        internal_api_key: str | None,
        ttl_s: float = 300.0,
        negative_ttl_s: float = 10.0,
        maxsize: int = 1024,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._headers = {INTERNAL_KEY_HEADER: internal_api_key} if internal_api_key else {}
        self._target = httpx.URL(url)
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

        def expires(_: str, value: Principal | _Invalid, now: float) -> float:
            return now + (negative_ttl_s if value is _INVALID else ttl_s)

        self._cache: TLRUCache[str, Principal | _Invalid] = TLRUCache(
            maxsize=maxsize, ttu=expires, timer=clock
        )

    async def authenticate(self, session: AsyncSession, token: str) -> Principal:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if cached is _INVALID:
            raise Unauthorized("invalid token")
        if isinstance(cached, Principal):
            return cached
        identity = await self._validate(token)
        if identity is None:
            self._cache[key] = _INVALID
            raise Unauthorized("invalid token")
        external_id, is_admin = identity
        user = await self._user(session, external_id)
        principal = Principal(user_id=user.id, name=user.name, is_admin=is_admin)
        self._cache[key] = principal
        return principal

    async def _validate(self, token: str) -> tuple[str, bool] | None:
        span = HttpClientSpan("GET", self._target)
        headers = {**self._headers, **span.headers, "Authorization": f"Bearer {token}"}
        try:
            try:
                response = await self._client.get(self._target, headers=headers)
            except BaseException as exc:
                span.fail(exc)
                raise
        except httpx.HTTPError as exc:
            raise AuthUnavailable(
                f"the auth service could not be reached ({type(exc).__name__})"
            ) from exc
        span.finish(response.status_code)
        if response.status_code in (401, 403):
            return None
        if response.status_code != 200:
            raise AuthUnavailable(f"the auth service answered HTTP {response.status_code}")
        try:
            body: Any = orjson.loads(response.content)
            external_id = body["user_id"]
            is_admin = body.get("is_admin", False)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise AuthUnavailable("the auth service answered something unreadable") from None
        if not isinstance(external_id, str | int) or not isinstance(is_admin, bool):
            raise AuthUnavailable("the auth service answered something unreadable")
        external = str(external_id)
        if not 1 <= len(external) <= 120:
            raise AuthUnavailable("the auth service answered an unusable user id")
        return external, is_admin

    async def _user(self, session: AsyncSession, external_id: str) -> User:
        """The local user for an external id, created on first sight."""
        user = await repo.get_user_by_external_id(session, external_id)
        if user is not None:
            return user
        user = User(name=f"ext:{external_id}", external_id=external_id, is_admin=False)
        try:
            await repo.add(session, user)
            await session.commit()
        except IntegrityError:
            await session.rollback()  # created by a concurrent request meanwhile
            found = await repo.get_user_by_external_id(session, external_id)
            if found is None:
                raise
            return found
        log.info("user_created", user_id=str(user.id), source="external_auth")
        return user

    async def aclose(self) -> None:
        await self._client.aclose()
