from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from chatlens.db.base import IdMixin, Model, utcnow


class User(IdMixin, Model):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(128), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    # The user's id at the external auth service (CHATLENS_AUTH_VALIDATE_URL), if from there.
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
