"""`chatlens serve`: check the port, migrate an embedded SQLite, create the first admin, start
uvicorn."""

from __future__ import annotations

import asyncio
import atexit
import errno
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from chatlens import __version__
from chatlens.app import configure_process
from chatlens.auth import service as auth
from chatlens.cli.base import (
    app,
    fail,
    settings_or_exit,
)
from chatlens.db import migrate
from chatlens.db.engine import create_engine, create_sessionmaker
from chatlens.http_protocol import bounded_httptools
from chatlens.inference.knowledge_base import (
    KnowledgeBaseError,
    default_knowledge_base_path,
    load_knowledge_base,
)
from chatlens.inference.pricing import PricingError, load_pricing
from chatlens.settings import Settings
from chatlens.shutdown import STORE_MARGIN_S


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [CHATLENS_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [CHATLENS_PORT]")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes [CHATLENS_WORKERS]")] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
) -> None:
    """Serve the API: migrate an embedded SQLite, create the first admin, start uvicorn."""
    import uvicorn

    settings = settings_or_exit()
    # JSON logs (and Sentry) from the first line, the admin set-up's included.
    configure_process(settings)
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    if reload and workers > 1:
        fail("--reload works with one worker only")
    try:
        # A bad knowledge base or price table stops here with one line.
        load_knowledge_base(settings.knowledge_base or default_knowledge_base_path())
        load_pricing(settings.pricing_file)
    except (KnowledgeBaseError, PricingError) as exc:
        fail(str(exc))
    # Before the database is made and an admin key printed that no server would accept.
    _check_port(host, port)

    admin_key = asyncio.run(_prepare_database(settings))
    if workers > 1:
        _prepare_multiprocess_metrics(settings.prometheus_multiproc_dir)
    _print_banner(settings, host, port, admin_key)
    uvicorn.run(
        "chatlens.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_level=settings.log_level.lower(),
        # Each worker's create_app routes uvicorn's records through our JSON logging, and
        # writes its own access line; uvicorn's plain-text config and access log stay off.
        log_config=None,
        access_log=False,
        # The app drains first on SIGTERM (chatlens.shutdown: the grace period, answers cut
        # and stored at its end); uvicorn then waits this long for any other request left.
        timeout_graceful_shutdown=STORE_MARGIN_S,
        # Which server runs it is nobody's business but ours.
        server_header=False,
        # httptools, with each request head bounded before the application sees it.
        http=bounded_httptools(
            max_head_bytes=settings.max_header_bytes, max_headers=settings.max_headers
        ),
    )


def _check_port(host: str, port: int) -> None:
    """Exit with one line when uvicorn could not listen on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port a stopped server left in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fail(
                    f"port {port} on {host} is in use; choose another with --port or CHATLENS_PORT",
                    1,
                )
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 1)


def _prepare_multiprocess_metrics(configured: Path | None) -> None:
    """Workers share metrics through files in one fresh directory, wiped at every start."""
    path = configured or Path(tempfile.mkdtemp(prefix="chatlens-metrics-"))
    if configured is None:
        # Ours alone: gone when serve exits (uvicorn's supervisor returns after SIGTERM).
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    if path.exists():
        strangers = [p.name for p in path.iterdir() if p.suffix != ".db"]
        if strangers:
            # Wiping is only safe for a folder of metric files; a mistyped path is refused.
            fail(f"PROMETHEUS_MULTIPROC_DIR={path} holds other files ({strangers[0]}, ...)")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    # A hand-off, not a setting read: uvicorn's worker processes inherit this environment,
    # and prometheus_client reads the variable in each of them.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


async def _prepare_database(settings: Settings) -> str | None:
    engine = create_engine(settings)
    try:
        if settings.should_auto_migrate:
            await migrate.upgrade(settings)
        elif await migrate.current_revision(engine) is None:
            fail(
                "the database has no schema: run `chatlens db upgrade` "
                "(or set CHATLENS_AUTO_MIGRATE=true)"
            )
        if not settings.bootstrap_admin:
            return None
        async with create_sessionmaker(engine)() as session, session.begin():
            return await auth.bootstrap_admin(session)
    except OSError as exc:
        fail(f"cannot reach the database: {exc}", 1)
    finally:
        await engine.dispose()


def _print_banner(settings: Settings, host: str, port: int, admin_key: str | None) -> None:
    shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host  # noqa: S104
    base = f"http://{shown_host}:{port}"
    database = str(settings.database_path) if settings.database_path else "PostgreSQL"
    key = admin_key or "$CHATLENS_KEY"
    lines = [
        f"chatlens {__version__} · backend {settings.inference_backend} · database {database}",
        "",
    ]
    if admin_key:
        lines += [
            "First start: an admin user was created. Its API key is shown only now",
            "(it is stored as a SHA-256 hash) — copy it:",
            "",
            f"    {admin_key}",
            "",
        ]
    else:
        lines += [
            "Use your API key (new one: chatlens keys create --user admin):",
            "    export CHATLENS_KEY=cl_...",
            "",
        ]
    lines += [
        "Ask the bot:",
        f"    curl -H \"Authorization: Bearer {key}\" -H 'content-type: application/json' \\",
        f'      -d \'{{"message":"Where is my order?"}}\' {base}/chat',
        "",
        f"API docs  {base}/docs",
        f"Metrics   {base}/metrics",
        f"Health    {base}/health",
        "",
    ]
    # stderr: stdout carries only JSON log lines, for log shippers.
    typer.echo("\n".join(lines), err=True)
