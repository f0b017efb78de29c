"""The README's configuration table names every setting, and every variable it names works."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk import environment_variables
from pydantic import AliasChoices, SecretStr

from chatlens.settings import Settings, env_name, load_settings

# Values for the settings that a type alone cannot invent (URLs, files, choices).
SAMPLES = {
    "environment": "staging",
    "database_url": "postgresql+asyncpg://u@db.test/chatlens",
    "host": "0.0.0.0",  # noqa: S104
    "log_level": "DEBUG",
    "log_format": "console",
    "otel_exporter_otlp_endpoint": "http://collector.test:4318",
    "sentry_dsn": "https://public@o0.ingest.sentry.io/1",
    "redis_url": "redis://redis.test:6379/0",
    "prometheus_multiproc_dir": "/srv/metrics",
    "s3_endpoint_url": "http://minio.test:9000",
    "cors_allow_origins": "https://shop.example",
    "inference_backend": "openai",
    "openai_base_url": "http://upstream.test/v1",
    "openai_api_key": "sk-test",
    "model": "gpt-test",
    "auth_validate_url": "http://auth.test/validate",
    "auth_internal_api_key": "internal",
    "critical_words": "refund,lawyer",
    "metrics_projects": "shop,support",
}
# Settings that are only valid together with others.
COMPANIONS = {
    "inference_backend": {"openai_base_url": "http://upstream.test/v1", "model": "gpt-test"},
}


def configuration_table(repo_root: Path) -> str:
    readme = (repo_root / "README.md").read_text()
    return readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]


def documented_variables(repo_root: Path) -> list[str]:
    """The variables of the table's first column: `A` or `B` names both."""
    names = []
    for line in configuration_table(repo_root).splitlines():
        cells = line.split("|")
        if len(cells) > 2 and cells[1].strip().startswith("`"):
            names += re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[1])
    return names


def field_of(variable: str) -> str:
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = (
            [str(choice) for choice in alias.choices]
            if isinstance(alias, AliasChoices)
            else [alias]
            if isinstance(alias, str)
            else [f"CHATLENS_{name.upper()}"]
        )
        if variable in names:
            return name
    raise AssertionError(f"{variable} sets no setting")


def sample(name: str, default: Any, tmp_path: Path) -> str:
    if name in SAMPLES:
        return SAMPLES[name]
    if name in ("knowledge_base", "pricing_file"):
        path = tmp_path / f"{name}.yaml"
        path.write_text("{}\n")
        return str(path)
    if isinstance(default, bool) or default is None:
        return "false" if default else "true"
    if isinstance(default, float) and 0 < default < 1:
        return str(default / 2)
    if isinstance(default, float | int):
        return str(default + 1)
    raise AssertionError(f"no sample value for {name}")


def test_every_setting_is_in_the_readme_configuration_table(repo_root: Path) -> None:
    table = configuration_table(repo_root)
    missing = [env_name(f) for f in Settings.model_fields if f"`{env_name(f)}`" not in table]
    assert missing == [], f"settings missing from the README: {missing}"


def test_every_field_is_named_after_its_variable() -> None:
    prefixed = [name for name in Settings.model_fields if env_name(name).startswith("CHATLENS_")]
    assert [n for n in prefixed if env_name(n) != f"CHATLENS_{n.upper()}"] == []


# Documented beside the settings, read by the OpenTelemetry SDK itself.
READ_BY_THE_SDK = {"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"}


def test_variables_the_sdk_reads_are_its_own() -> None:
    known = {value for key, value in vars(environment_variables).items() if key.startswith("OTEL_")}
    assert known >= READ_BY_THE_SDK


def test_every_documented_variable_sets_its_setting(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file
    variables = documented_variables(repo_root)
    assert len(variables) >= len(Settings.model_fields)
    for name in list(os.environ):
        if name.startswith(("CHATLENS_", "OTEL_")) or name in variables:
            monkeypatch.delenv(name)
    defaults = load_settings()
    for variable in variables:
        if variable in READ_BY_THE_SDK:
            continue
        name = field_of(variable)
        value = sample(name, getattr(defaults, name), tmp_path)
        companions = COMPANIONS.get(name, {})
        with monkeypatch.context() as env:
            env.setenv(variable, value)
            for field, given in companions.items():
                env.setenv(env_name(field), given)
            read = getattr(load_settings(), name)
        expected = getattr(load_settings(**{name: value, **companions}), name)
        if isinstance(read, SecretStr) and isinstance(expected, SecretStr):
            read, expected = read.get_secret_value(), expected.get_secret_value()
        assert read == expected != getattr(defaults, name), variable
