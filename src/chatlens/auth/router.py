"""Who am I, and the administrators' management of users and API keys."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from chatlens.auth import service
from chatlens.auth.deps import AdminUser, AuthenticatedRoute, CurrentUser, KeyCacheDep
from chatlens.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead, UserCreate, UserRead
from chatlens.db.session import SessionDep
from chatlens.responses import errors

router = APIRouter(prefix="/api", tags=["auth"], route_class=AuthenticatedRoute)
admin = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    responses=errors(401, 403),
    route_class=AuthenticatedRoute,
)


@router.get("/me", response_model=UserRead, responses=errors(401))
async def read_me(session: SessionDep, user: CurrentUser) -> UserRead:
    """The user behind the API key."""
    return UserRead.model_validate(await service.get_user_or_raise(session, user.user_id))


@admin.get("/users", response_model=list[UserRead])
async def list_users(session: SessionDep, _: AdminUser) -> list[UserRead]:
    """Every user."""
    return [UserRead.model_validate(u) for u in await service.list_users(session)]


@admin.post(
    "/users",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    responses=errors(409, 422),
)
async def create_user(session: SessionDep, _: AdminUser, body: UserCreate) -> UserRead:
    """Create a user (give it a key with POST /api/admin/users/{id}/keys)."""
    user = await service.create_user(session, name=body.name, is_admin=body.is_admin)
    return UserRead.model_validate(user)


@admin.get("/users/{user_id}/keys", response_model=list[ApiKeyRead], responses=errors(404))
async def list_keys(session: SessionDep, _: AdminUser, user_id: uuid.UUID) -> list[ApiKeyRead]:
    """A user's API keys (never the keys themselves)."""
    user = await service.get_user_or_raise(session, user_id)
    return [ApiKeyRead.model_validate(k) for k in await service.list_keys(session, user=user)]


@admin.post(
    "/users/{user_id}/keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses=errors(404, 422),
)
async def create_key(
    session: SessionDep, _: AdminUser, user_id: uuid.UUID, body: ApiKeyCreate | None = None
) -> ApiKeyCreated:
    """Create an API key; the key is in this response only, it is stored hashed."""
    user = await service.get_user_or_raise(session, user_id)
    key, secret = await service.create_key(session, user=user, name=body.name if body else None)
    return ApiKeyCreated(**ApiKeyRead.model_validate(key).model_dump(), key=secret)


@admin.delete("/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404))
async def revoke_key(
    session: SessionDep, _: AdminUser, cache: KeyCacheDep, key_id: uuid.UUID
) -> None:
    """Revoke an API key. Requests with it fail at once on the process that served this
    call, and within `CHATLENS_API_KEY_CACHE_TTL_SECONDS` on other workers and replicas."""
    await service.revoke_key_now(session, key_id_or_prefix=str(key_id), cache=cache)
