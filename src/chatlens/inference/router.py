"""The models the backend offers, and the admin's swap of the active one."""

from __future__ import annotations

from fastapi import APIRouter

from chatlens.auth.deps import AdminUser, CurrentUser
from chatlens.chat.router import PipelineDep
from chatlens.db.session import SessionDep
from chatlens.inference import service
from chatlens.inference.schemas import ModelRead, ModelsRead, ModelSwap, ModelSwapped
from chatlens.responses import errors

router = APIRouter(prefix="/api/models", tags=["models"])


@router.get("", response_model=ModelsRead, responses=errors(401, 502, 503))
async def list_models(_: CurrentUser, pipeline: PipelineDep) -> ModelsRead:
    """The backend's models (cached for a minute), the active one marked."""
    names = await service.list_models(pipeline)
    return ModelsRead(
        backend=pipeline.backend.name,
        active=pipeline.model,
        models=[ModelRead(id=name, active=name == pipeline.model) for name in names],
    )


@router.post("/swap", response_model=ModelSwapped, responses=errors(401, 403, 404, 422, 502))
async def swap_model(
    session: SessionDep, admin: AdminUser, pipeline: PipelineDep, body: ModelSwap
) -> ModelSwapped:
    """Answer with another of the backend's models from now on, on every replica (admin)."""
    previous = await service.swap_model(session, pipeline, model=body.model, admin_id=admin.user_id)
    return ModelSwapped(active=body.model, previous=previous)
