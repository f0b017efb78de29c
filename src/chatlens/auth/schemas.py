from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from chatlens.fields import NAME, TEXT_SCHEMA, StrictBool, Text


class UserCreate(BaseModel):
    # No white space at either end, one line, no NUL.
    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=128,
            pattern=NAME,
            examples=["support-web"],
        ),
        TEXT_SCHEMA,
    ]
    is_admin: StrictBool = False


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    is_admin: bool
    created_at: datetime


class ApiKeyCreate(BaseModel):
    name: Annotated[Text, Field(max_length=128, examples=["widget production"])] | None = None


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    name: str | None
    prefix: str = Field(description="The key's first characters, to tell keys apart")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The API key itself; shown only in this response")
