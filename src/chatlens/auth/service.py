"""Who is calling: API keys to principals, and the management of users and keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.auth import keys
from chatlens.auth import repository as repo
from chatlens.db.base import utcnow
from chatlens.errors import Conflict, NotFound, Unauthorized
from chatlens.models import ApiKey, User

log = structlog.get_logger(__name__)

# last_used_at is refreshed at most this often, so authentication is not a write per request.
_TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    name: str
    is_admin: bool


async def authenticate(session: AsyncSession, token: str | None) -> Principal:
    """The principal behind a bearer token; Unauthorized for a missing, unknown or revoked key."""
    if not token:
        raise Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>'")
    if not keys.looks_like_key(token):
        raise Unauthorized("invalid API key")
    found = await repo.get_key_with_user(session, keys.hash_key(token))
    if found is None:
        raise Unauthorized("invalid API key")
    key, user = found
    if key.revoked_at is not None:
        raise Unauthorized("API key has been revoked")
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _TOUCH_INTERVAL:
        await repo.touch_key(session, key.id, now)
    return Principal(user_id=user.id, name=user.name, is_admin=user.is_admin)


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


async def bootstrap_admin(session: AsyncSession) -> str | None:
    """On an empty database, create the first admin and return its key (else None)."""
    if await repo.count_users(session) > 0:
        return None
    user = await create_user(session, name="admin", is_admin=True)
    _, secret = await create_key(session, user=user, name="bootstrap")
    return secret
