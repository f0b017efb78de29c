"""The models the backend offers, and the admin's swap of the active one."""

from __future__ import annotations

from fastapi import APIRouter

from chatlens.auth.deps import AdminUser, AuthenticatedRoute, CurrentUser
from chatlens.db.session import SessionDep
from chatlens.inference.deps import ActiveModelDep
from chatlens.inference.schemas import ModelRead, ModelsRead, ModelSwap, ModelSwapped
from chatlens.responses import errors

router = APIRouter(prefix="/api/models", tags=["models"], route_class=AuthenticatedRoute)


@router.get("", response_model=ModelsRead, responses=errors(401, 502, 503))
async def list_models(_: CurrentUser, active_model: ActiveModelDep) -> ModelsRead:
    """The backend's models (cached for a minute), the active one marked."""
    names = await active_model.list_models()
    active = active_model.current
    return ModelsRead(
        backend=active_model.backend.name,
        active=active,
        models=[ModelRead(id=name, active=name == active) for name in names],
    )


@router.post("/swap", response_model=ModelSwapped, responses=errors(401, 403, 404, 422, 502))
async def swap_model(
    session: SessionDep, admin: AdminUser, active_model: ActiveModelDep, body: ModelSwap
) -> ModelSwapped:
    """Answer with another of the backend's models from now on, on every replica (admin)."""
    previous = await active_model.swap(session, model=body.model, admin_id=admin.user_id)
    return ModelSwapped(active=body.model, previous=previous)
