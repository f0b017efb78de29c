"""Invalid settings stop start-up with one clear line naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatlens.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DATABASE_URL": "mysql://x@y/z"}, "invalid setting DATABASE_URL: driver 'mysql'"),
        ({"DATABASE_URL": "not a url"}, "invalid setting DATABASE_URL: not a database URL"),
        (
            {"CHATLENS_ESCALATION_THRESHOLD": "-0.1"},
            "invalid setting CHATLENS_ESCALATION_THRESHOLD",
        ),
        ({"CHATLENS_MAX_BODY_BYTES": "-5"}, "invalid setting CHATLENS_MAX_BODY_BYTES"),
        ({"CHATLENS_HISTORY_MESSAGES": "0"}, "invalid setting CHATLENS_HISTORY_MESSAGES"),
        ({"CHATLENS_PORT": "eighty"}, "invalid setting CHATLENS_PORT"),
        ({"LOG_LEVEL": "loud"}, "invalid setting LOG_LEVEL"),
        (
            {"CHATLENS_KNOWLEDGE_BASE": "/nonexistent/kb.yaml"},
            "invalid setting CHATLENS_KNOWLEDGE_BASE: /nonexistent/kb.yaml is not a readable file",
        ),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_password_in_a_bad_database_url_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://user:hunter2@db/x")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    defaults = load_settings()
    assert defaults.database_url == "sqlite+aiosqlite:///./chatlens.db"
    assert defaults.should_auto_migrate is True
    assert defaults.escalation_threshold == 0.35
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@localhost/chatlens")
    monkeypatch.setenv("CHATLENS_ESCALATION_THRESHOLD", "0.5")
    configured = load_settings()
    assert configured.should_auto_migrate is False  # PostgreSQL: only `chatlens db upgrade`
    assert configured.escalation_threshold == 0.5
    monkeypatch.setenv("CHATLENS_AUTO_MIGRATE", "true")
    assert load_settings().should_auto_migrate is True
