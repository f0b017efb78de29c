"""The application's typed state: the parts each package needs, found by their type.

`create_app` and the lifespan build one frozen `AppState` and keep it on the app; each
package's `deps.py` reads its own part (`state_of(request).get(Database)`), so a reader gets
the type it asked for and no package imports another package's state (nor this module
anyone's: it stays below every package, like settings).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends, FastAPI, Request

from chatlens.settings import Settings

T = TypeVar("T")


class AppState:
    """A frozen set of parts, one per type: settings, the database, the chat pipeline…"""

    __slots__ = ("_parts",)

    def __init__(self, *parts: object) -> None:
        kinds = [type(part) for part in parts]
        if len(set(kinds)) != len(kinds):
            raise ValueError("one part per type")
        self._parts: dict[type[Any], object] = dict(zip(kinds, parts, strict=True))

    def get(self, kind: type[T]) -> T:
        try:
            part = self._parts[kind]
        except KeyError:
            raise LookupError(f"no {kind.__name__} in the application state yet") from None
        return cast(T, part)  # stored under its own type by __init__

    def replace(self, *parts: object) -> AppState:
        """A copy with these parts added or put in place of those of their type."""
        merged = {**self._parts, **{type(part): part for part in parts}}
        return AppState(*merged.values())


def install(app: FastAPI, state: AppState) -> None:
    app.state.chatlens = state


def of(app: FastAPI) -> AppState:
    state: AppState = app.state.chatlens
    return state


def state_of(request: Request) -> AppState:
    return of(request.app)


async def get_settings(request: Request) -> Settings:
    return state_of(request).get(Settings)


SettingsDep = Annotated[Settings, Depends(get_settings)]
