"""SQL for the settings an admin changes at run time (the active model)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.db.base import utcnow
from chatlens.models import RuntimeSetting


async def get_setting(session: AsyncSession, key: str) -> str | None:
    row = await session.get(RuntimeSetting, key)
    return row.value if row is not None else None


async def set_setting(session: AsyncSession, key: str, value: str, *, by: uuid.UUID | None) -> None:
    row = await session.get(RuntimeSetting, key)
    if row is None:
        session.add(RuntimeSetting(key=key, value=value, updated_at=utcnow(), updated_by=by))
    else:
        row.value, row.updated_at, row.updated_by = value, utcnow(), by
    await session.flush()
