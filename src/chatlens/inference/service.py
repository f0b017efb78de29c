"""The active model: listed from the backend, swapped by an admin, shared through the database."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.chat.service import ChatPipeline, ModelNotFound
from chatlens.inference import repository as repo

log = structlog.get_logger(__name__)


def active_model_key(backend: str) -> str:
    # Per backend: switching CHATLENS_INFERENCE_BACKEND does not inherit a foreign model.
    return f"active_model:{backend}"


async def load_active_model(session: AsyncSession, pipeline: ChatPipeline) -> str:
    """Adopt the model stored by a swap (on any replica); the backend's default otherwise."""
    stored = await repo.get_setting(session, active_model_key(pipeline.backend.name))
    model = stored or pipeline.backend.default_model
    if model != pipeline.model:
        log.info("active_model_changed", model=model, previous=pipeline.model)
        pipeline.model = model
    return model


async def list_models(pipeline: ChatPipeline) -> list[str]:
    names = await pipeline.backend.models()
    return [pipeline.model, *(name for name in names if name != pipeline.model)]


async def swap_model(
    session: AsyncSession, pipeline: ChatPipeline, *, model: str, admin_id: uuid.UUID
) -> str:
    """Make `model` the active one on every replica; returns the previous one."""
    if model not in await pipeline.backend.models():
        raise ModelNotFound(f"the backend has no model {model!r}; GET /api/models lists them")
    previous = pipeline.model
    await repo.set_setting(session, active_model_key(pipeline.backend.name), model, by=admin_id)
    await session.commit()
    pipeline.model = model
    log.info("model_swapped", model=model, previous=previous, admin_user_id=str(admin_id))
    return previous
