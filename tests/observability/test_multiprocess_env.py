"""PROMETHEUS_MULTIPROC_DIR set only in .env: prometheus_client never reads .env, so one
process keeps its own metrics instead of reading a folder nothing writes to."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from chatlens.app import create_app
from chatlens.settings import load_settings


async def test_a_metrics_folder_named_only_in_dotenv_leaves_one_process_metrics_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (tmp_path / ".env").write_text(f"PROMETHEUS_MULTIPROC_DIR={folder}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'chatlens.db'}",
        environment="test",
        bootstrap_admin=False,
        auto_migrate=True,
    )
    assert settings.prometheus_multiproc_dir == folder  # the setting is read from .env
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await client.get("/health/live")
            response = await client.get("/metrics")
    assert response.status_code == 200
    assert 'http_requests_total{method="GET",route="/health/live",status="200"} 1.0' in (
        response.text
    )
    assert "process_resident_memory_bytes" in response.text
