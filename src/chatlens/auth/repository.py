"""SQL for users and API keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.models import ApiKey, User


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_external_id(session: AsyncSession, external_id: str) -> User | None:
    return await session.scalar(select(User).where(User.external_id == external_id))


async def get_user_by_name(session: AsyncSession, name: str) -> User | None:
    return await session.scalar(select(User).where(User.name == name))


async def list_users(session: AsyncSession) -> Sequence[User]:
    return (await session.scalars(select(User).order_by(User.created_at, User.id))).all()


async def count_users(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(User)) or 0


async def add(session: AsyncSession, row: User | ApiKey) -> None:
    session.add(row)
    await session.flush()


async def get_key_with_user(session: AsyncSession, key_hash: str) -> tuple[ApiKey, User] | None:
    row = (
        await session.execute(
            select(ApiKey, User)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == key_hash)
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def get_key(session: AsyncSession, key_id: uuid.UUID) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def get_key_by_prefix(session: AsyncSession, prefix: str) -> Sequence[ApiKey]:
    return (await session.scalars(select(ApiKey).where(ApiKey.prefix == prefix))).all()


async def list_keys(session: AsyncSession, user_id: uuid.UUID) -> Sequence[ApiKey]:
    query = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at)
    return (await session.scalars(query)).all()


async def touch_key(session: AsyncSession, key_id: uuid.UUID, when: datetime) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))
