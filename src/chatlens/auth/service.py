"""Who is calling: API keys to principals, and the management of users and keys."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from cachetools import TTLCache
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.auth import failures, keys
from chatlens.auth import repository as repo
from chatlens.auth.failures import AuthFailures
from chatlens.db.base import utcnow
from chatlens.errors import ChatlensError, Conflict, NotFound, Unauthorized
from chatlens.models import ApiKey, User
from chatlens.observability.metrics import Metrics

if TYPE_CHECKING:  # external.py imports this module (Principal, AuthUnavailable)
    from chatlens.auth.external import ExternalAuth

log = structlog.get_logger(__name__)

# last_used_at is refreshed at most this often, so authentication is not a write per request
# (and, with the key cache, only when a request has to look the key up).
_TOUCH_INTERVAL = timedelta(minutes=1)


class AuthUnavailable(ChatlensError):
    """The auth service could not say: 503, never 401 (the token may well be valid)."""

    status_code = 503
    error_type = "auth_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class AuthFailed(Unauthorized):
    """A 401 that says why, for the count of failures (the client sees the message alone)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    name: str
    is_admin: bool


class KeyCache:
    """Principals of recently used API keys, by the key's hash, for `ttl_s` seconds.

    Most requests then skip the key lookup. A key revoked through the API of this process
    is forgotten at once; one revoked elsewhere (another worker or replica, the CLI) stops
    working within `ttl_s`. Only keys that were valid are kept.
    """

    def __init__(
        self, *, ttl_s: float, maxsize: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._principals: TTLCache[str, Principal] = TTLCache(
            maxsize=maxsize, ttl=ttl_s, timer=clock
        )
        # Keys forgotten within the TTL: a request that read such a key before its
        # revocation was committed must not cache it as valid again afterwards.
        self._forgotten: TTLCache[str, bool] = TTLCache(maxsize=maxsize, ttl=ttl_s, timer=clock)

    def get(self, key_hash: str) -> Principal | None:
        return self._principals.get(key_hash)

    def put(self, key_hash: str, principal: Principal) -> None:
        if key_hash not in self._forgotten:
            self._principals[key_hash] = principal

    def forget(self, key_hash: str) -> None:
        self._principals.pop(key_hash, None)
        self._forgotten[key_hash] = True


def from_cache(token: str | None, cache: KeyCache | None) -> Principal | None:
    """The principal of a key the cache holds, without the database; None otherwise."""
    if not token or cache is None or not keys.looks_like_key(token):
        return None
    return cache.get(keys.hash_key(token))


async def authenticate(
    session: AsyncSession, token: str | None, *, cache: KeyCache | None = None
) -> Principal:
    """The principal behind a bearer token; Unauthorized for a missing, unknown or revoked key."""
    if (principal := from_cache(token, cache)) is not None:
        return principal
    if not token:
        raise AuthFailed(
            "a valid API key is required: send 'Authorization: Bearer <key>'",
            reason=failures.MISSING,
        )
    if not keys.looks_like_key(token):
        raise AuthFailed("invalid API key", reason=failures.MALFORMED)
    key_hash = keys.hash_key(token)
    found = await repo.get_key_with_user(session, key_hash)
    if found is None:
        raise AuthFailed("invalid API key", reason=failures.UNKNOWN_KEY)
    key, user = found
    if key.revoked_at is not None:
        raise AuthFailed("API key has been revoked", reason=failures.REVOKED)
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _TOUCH_INTERVAL:
        await repo.touch_key(session, key.id, now)
    principal = Principal(user_id=user.id, name=user.name, is_admin=user.is_admin)
    if cache is not None:
        cache.put(key_hash, principal)
    return principal


async def identify(
    session: AsyncSession,
    token: str | None,
    *,
    cache: KeyCache | None,
    external: ExternalAuth | None,
    metrics: Metrics | None,
    failed: AuthFailures | None = None,
    source: str | None = None,
) -> Principal:
    """Who sends `token`, the request's own `session` used only when a lookup is needed.

    With an external auth service, chatlens's own `cl_` keys still work (the CLI's admin
    keys); every other bearer token is the auth service's to judge. A key's last use is
    committed before the route runs: on SQLite the route's writes may need the connection.
    A refusal is counted, and sampled into the log, as coming from `source` (an address).
    """
    if external is not None and token and not keys.looks_like_key(token):
        try:
            return await external.authenticate(session, token)  # creates first-seen users
        except AuthUnavailable as exc:
            if metrics is not None:
                metrics.errors.labels(exc.error_type, "auth").inc()
            log.warning("auth_unavailable", reason=exc.message)
            raise
        except Unauthorized:
            if failed is not None:
                failed.record(failures.EXTERNAL_REFUSED, source=source, metrics=metrics)
            raise
    # A key in the cache needs no database: the session never connects.
    if (cached := from_cache(token, cache)) is not None:
        return cached
    try:
        principal = await authenticate(session, token, cache=cache)
    except AuthFailed as exc:
        if failed is not None:
            failed.record(exc.reason, source=source, metrics=metrics)
        raise
    await session.commit()  # the key's last use
    return principal


async def create_user(session: AsyncSession, *, name: str, is_admin: bool = False) -> User:
    if await repo.get_user_by_name(session, name) is not None:
        raise Conflict(f"a user named {name!r} already exists")
    user = User(name=name, is_admin=is_admin)
    try:
        await repo.add(session, user)
    except IntegrityError:
        raise Conflict(f"a user named {name!r} already exists") from None
    log.info("user_created", user_id=str(user.id), is_admin=is_admin)
    return user


async def list_users(session: AsyncSession) -> Sequence[User]:
    return await repo.list_users(session)


async def get_user_or_raise(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await repo.get_user(session, user_id)
    if user is None:
        raise NotFound("user not found")
    return user


async def resolve_user(session: AsyncSession, name_or_id: str) -> User:
    """A user by id or by name (for the CLI)."""
    try:
        user = await repo.get_user(session, uuid.UUID(name_or_id))
    except ValueError:
        user = None
    user = user or await repo.get_user_by_name(session, name_or_id)
    if user is None:
        raise NotFound(f"no user with id or name {name_or_id!r}")
    return user


async def create_key(
    session: AsyncSession, *, user: User, name: str | None = None
) -> tuple[ApiKey, str]:
    """A new key for a user; returns the row and the key, which is never stored."""
    secret = keys.generate_key()
    key = ApiKey(
        user_id=user.id,
        name=name,
        prefix=keys.display_prefix(secret),
        key_hash=keys.hash_key(secret),
    )
    await repo.add(session, key)
    log.info("api_key_created", user_id=str(user.id), key_id=str(key.id), key_prefix=key.prefix)
    return key, secret


async def list_keys(session: AsyncSession, *, user: User) -> Sequence[ApiKey]:
    return await repo.list_keys(session, user.id)


async def revoke_key(session: AsyncSession, *, key_id_or_prefix: str) -> ApiKey:
    """Revoke a key by id or display prefix; revoking twice keeps the first time."""
    try:
        key = await repo.get_key(session, uuid.UUID(key_id_or_prefix))
        matches = [] if key is None else [key]
    except ValueError:
        matches = list(await repo.get_key_by_prefix(session, key_id_or_prefix))
    if not matches:
        raise NotFound("API key not found")
    if len(matches) > 1:
        raise Conflict("several keys share that prefix; revoke by id")
    key = matches[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
        log.info("api_key_revoked", user_id=str(key.user_id), key_id=str(key.id))
    return key


async def revoke_key_now(
    session: AsyncSession, *, key_id_or_prefix: str, cache: KeyCache | None
) -> ApiKey:
    """Revoke a key and commit; this process's cache forgets it at once."""
    key = await revoke_key(session, key_id_or_prefix=key_id_or_prefix)
    # Committed before the cache forgets the key; a request that read it before the commit
    # cannot cache it again (KeyCache.forget).
    await session.commit()
    if cache is not None:
        cache.forget(key.key_hash)
    return key


async def bootstrap_admin(session: AsyncSession) -> str | None:
    """On an empty database, create the first admin and return its key (else None)."""
    if await repo.count_users(session) > 0:
        return None
    user = await create_user(session, name="admin", is_admin=True)
    _, secret = await create_key(session, user=user, name="bootstrap")
    return secret
