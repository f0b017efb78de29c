"""No route waits for a thread: FastAPI runs a plain `def` endpoint or dependency in its
threadpool, a hop that costs about 0.1 ms of every request that uses it."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from chatlens.app import create_app
from tests.helpers import make_settings


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router, kept as such
            yield from _api_routes(route.original_router.routes)


def _runs_on_the_loop(call: Any) -> bool:
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return True
    # Security schemes such as HTTPBearer are instances with an async __call__.
    return inspect.iscoroutinefunction(type(call).__call__)


def test_every_endpoint_and_dependency_is_async(tmp_path: Any) -> None:
    app = create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'deps.db'}"))
    blocking = []
    routes = list(_api_routes(app.routes))
    assert len(routes) > 30  # every router's routes, not only the app's own
    for route in routes:
        for call in [route.endpoint, *_calls(route.dependant)]:
            if not _runs_on_the_loop(call):
                blocking.append(f"{route.path}: {getattr(call, '__qualname__', call)}")
    assert blocking == []
