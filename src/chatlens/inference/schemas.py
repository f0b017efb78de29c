from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from chatlens.fields import Text


class ModelRead(BaseModel):
    id: str
    active: bool


class ModelsRead(BaseModel):
    backend: str
    active: str
    models: list[ModelRead]


class ModelSwap(BaseModel):
    model: Annotated[Text, Field(min_length=1, max_length=200)]


class ModelSwapped(BaseModel):
    active: str
    previous: str
