"""Dependency alias for the active model: ActiveModelDep."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from chatlens.inference.service import ActiveModel


async def get_active_model(request: Request) -> ActiveModel:
    active_model: ActiveModel = request.app.state.active_model
    return active_model


ActiveModelDep = Annotated[ActiveModel, Depends(get_active_model)]
