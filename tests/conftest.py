"""Fixtures: the same suite on SQLite and on PostgreSQL, apps driven through ASGI."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatlens import state
from chatlens.app import create_app
from chatlens.auth import service as auth
from chatlens.db import migrate
from chatlens.db.base import Model
from chatlens.db.session import Database
from chatlens.settings import Settings
from tests import helpers
from tests.helpers import STRICT, make_settings, require

PG_URL_ENV = "CHATLENS_TEST_DATABASE_URL"


@asynccontextmanager
async def _pg_admin(base_url: str) -> AsyncIterator[Any]:
    """A connection to the server's `postgres` database, for creating and dropping others."""
    import asyncpg

    url = make_url(base_url)
    connection = await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        database="postgres",
    )
    try:
        yield connection
    finally:
        await connection.close()


async def create_pg_database(base_url: str, name: str) -> str:
    """Create an empty PostgreSQL database beside the configured one; returns its URL."""
    async with _pg_admin(base_url) as admin:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def drop_pg_database(base_url: str, name: str) -> None:
    async with _pg_admin(base_url) as admin:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# PostgreSQL joins the run when configured; under CHATLENS_STRICT_TESTS=1 it is required.
DATABASES = ["sqlite"] + (["postgresql"] if os.environ.get(PG_URL_ENV) or STRICT else [])


TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`slow`: the tests that start real processes (a server, the CLI, Prometheus: they ask
    for `env_without_chatlens`) and the deploy checks. `make test-quick` leaves them out."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "env_without_chatlens" in fixtures or item.path.is_relative_to(TESTS / "deploy"):
            item.add_marker(pytest.mark.slow)


def pytest_report_header() -> str:
    missing = "" if "postgresql" in DATABASES else f" (set {PG_URL_ENV} to add PostgreSQL)"
    return f"databases: {', '.join(DATABASES)}{missing}"


@pytest.fixture(scope="session", params=DATABASES)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgresql":
        require(bool(os.environ.get(PG_URL_ENV)), f"PostgreSQL ({PG_URL_ENV})")
    return name


@pytest.fixture(scope="session")
async def fresh_database_url(
    backend_name: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Any]:
    """A factory of empty databases of the current backend, dropped at the end."""
    created: list[str] = []
    base = os.environ.get(PG_URL_ENV, "")

    async def make(label: str) -> str:
        if backend_name == "sqlite":
            path = tmp_path_factory.mktemp(label) / "chatlens.db"
            return f"sqlite+aiosqlite:///{path}"
        name = f"chatlens_test_{label}_{os.getpid()}"
        try:
            url = await create_pg_database(base, name)
        except OSError as exc:
            require(False, f"PostgreSQL at {make_url(base).host} ({exc})")
        created.append(name)
        return url

    yield make
    for name in created:
        await drop_pg_database(base, name)


@pytest.fixture(scope="session")
async def settings(fresh_database_url: Any) -> Settings:
    url = await fresh_database_url("suite")
    settings = make_settings(url)
    await migrate.upgrade(settings)
    return settings


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Any]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def sessionmaker(app: Any) -> async_sessionmaker[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = state.of(app).get(Database).sessionmaker
    return maker


@pytest.fixture(autouse=True)
async def _clean_tables(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every test that uses the database starts with empty tables."""
    uses_database = "sessionmaker" in request.fixturenames or "app" in request.fixturenames
    maker: async_sessionmaker[AsyncSession] | None = (
        request.getfixturevalue("sessionmaker") if uses_database else None
    )
    yield
    if maker is None:
        return
    async with maker() as session, session.begin():
        for table in reversed(Model.metadata.sorted_tables):
            await session.execute(delete(table))


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://chatlens.test") as c:
        yield c


@dataclass
class Account:
    id: uuid.UUID
    name: str
    key: str
    is_admin: bool

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def make_account(sessionmaker: async_sessionmaker[AsyncSession]) -> Any:
    """Create a user with an API key: `await make_account(admin=False)`."""

    async def make(*, admin: bool = False, name: str | None = None) -> Account:
        name = name or f"user-{uuid.uuid4().hex[:8]}"
        async with sessionmaker() as session, session.begin():
            user = await auth.create_user(session, name=name, is_admin=admin)
            _, key = await auth.create_key(session, user=user)
        return Account(id=user.id, name=name, key=key, is_admin=admin)

    return make


@pytest.fixture
async def account(make_account: Any) -> Account:
    result: Account = await make_account()
    return result


@pytest.fixture
async def admin(make_account: Any) -> Account:
    result: Account = await make_account(admin=True)
    return result


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture
def env_without_chatlens() -> dict[str, str]:
    """The process environment minus chatlens/database variables, for CLI subprocesses."""
    return helpers.env_without_chatlens()
