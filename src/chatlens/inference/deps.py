"""Dependency aliases for the inference side: ActiveModelDep and BackendDep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from chatlens.inference.base import InferenceBackend
from chatlens.inference.service import ActiveModel
from chatlens.state import state_of


@dataclass(frozen=True, slots=True)
class Inference:
    """The application state's inference part: the backend and which of its models answers."""

    backend: InferenceBackend
    active_model: ActiveModel


async def get_active_model(request: Request) -> ActiveModel:
    return state_of(request).get(Inference).active_model


async def get_backend(request: Request) -> InferenceBackend:
    return state_of(request).get(Inference).backend


ActiveModelDep = Annotated[ActiveModel, Depends(get_active_model)]
BackendDep = Annotated[InferenceBackend, Depends(get_backend)]
