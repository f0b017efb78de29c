"""The active model: listed from the backend, swapped by an admin, shared through the database."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from chatlens.errors import ChatlensError, NotFound
from chatlens.inference import repository as repo
from chatlens.inference.base import InferenceBackend

log = structlog.get_logger(__name__)


class ModelNotFound(NotFound):
    error_type = "model_not_found"


def active_model_key(backend: str) -> str:
    # Per backend: switching CHATLENS_INFERENCE_BACKEND does not inherit a foreign model.
    return f"active_model:{backend}"


class ActiveModel:
    """Which of the backend's models answers now; the chat pipeline reads it on every turn."""

    def __init__(self, backend: InferenceBackend) -> None:
        self.backend = backend
        # The backend's default until an admin swaps it (here or on another replica).
        self.current = backend.default_model

    async def list_models(self) -> list[str]:
        """The backend's models, the active one first."""
        names = await self.backend.models()
        return [self.current, *(name for name in names if name != self.current)]

    async def resolve(self, requested: str) -> str:
        """The model a client asked for, if the backend has it (404 otherwise)."""
        if requested == self.current:
            return requested
        try:
            names = await self.backend.models()
        except ChatlensError:
            return requested  # the list is unavailable: the upstream itself will judge the name
        if requested not in names:
            raise ModelNotFound(
                f"the model {requested!r} does not exist; GET /v1/models lists them"
            )
        return requested

    async def load(self, session: AsyncSession) -> str:
        """Adopt the model stored by a swap (on any replica); the backend's default otherwise."""
        stored = await repo.get_setting(session, active_model_key(self.backend.name))
        model = stored or self.backend.default_model
        if model != self.current:
            log.info("active_model_changed", model=model, previous=self.current)
            self.current = model
        return model

    async def swap(self, session: AsyncSession, *, model: str, admin_id: uuid.UUID) -> str:
        """Make `model` the active one on every replica; returns the previous one."""
        if model not in await self.backend.models():
            raise ModelNotFound(f"the backend has no model {model!r}; GET /api/models lists them")
        previous = self.current
        await repo.set_setting(session, active_model_key(self.backend.name), model, by=admin_id)
        await session.commit()
        self.current = model
        log.info("model_swapped", model=model, previous=previous, admin_user_id=str(admin_id))
        return previous
