"""Every setting of chatlens, read from the environment in one place."""

from __future__ import annotations

import os
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from chatlens import __version__

_SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


class Environment(StrEnum):
    development = "development"
    test = "test"
    staging = "staging"
    production = "production"


# Feedback comments with any of these (whole words, any case) are flagged for a person.
DEFAULT_CRITICAL_WORDS = (
    "fraud,scam,scammer,scammers,lawyer,lawsuit,sue,court,police,chargeback,"
    "мошенник,мошенники,мошенничество,обман,суд,суда,юрист,адвокат,полиция"
)


class SettingsError(ValueError):
    """Invalid configuration; str() is one line naming the setting."""


class Settings(BaseSettings):
    """chatlens configuration; see the README's configuration table."""

    # A field is set by CHATLENS_<FIELD NAME>; the standard variables (DATABASE_URL,
    # LOG_LEVEL, SENTRY_DSN, OTEL_*, ...) are read unprefixed, by their validation_alias.
    model_config = SettingsConfigDict(
        env_prefix="CHATLENS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    environment: Environment = Environment.development
    database_url: str = Field("sqlite+aiosqlite:///./chatlens.db", validation_alias="DATABASE_URL")
    database_pool_size: Annotated[int, Field(ge=1)] = 10
    database_echo: bool = False
    auto_migrate: bool | None = Field(
        None,
        description="Upgrade the schema on start; default: on for SQLite, off for PostgreSQL.",
    )
    bootstrap_admin: bool = True

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1)] = 1
    # After SIGTERM: answers in progress get this long; within Kubernetes' default 30 s.
    shutdown_grace_seconds: Annotated[float, Field(gt=0, le=3600)] = 25.0

    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    log_format: Literal["json", "console"] = Field("json", validation_alias="LOG_FORMAT")
    log_message_content: bool = False
    access_log: bool = True
    metrics_enabled: bool = True
    profiling_enabled: bool | None = Field(
        None,
        description="Profiling on demand for admins; default: on, but off in production.",
    )
    tracing_enabled: bool = True
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ),
    )
    sentry_dsn: str | None = Field(None, validation_alias="SENTRY_DSN")
    sentry_traces_sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # Read by prometheus_client in every worker process too; `chatlens serve` sets it for them.
    prometheus_multiproc_dir: Path | None = Field(None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("CHATLENS_REDIS_URL", "REDIS_URL")
    )
    s3_endpoint_url: str | None = None
    active_sessions_window_seconds: Annotated[int, Field(ge=60)] = 900
    active_sessions_refresh_seconds: Annotated[float, Field(gt=0)] = 30.0

    inference_backend: Literal["builtin", "openai"] = "builtin"
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    model: str | None = None
    pricing_file: Path | None = None
    upstream_connect_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    upstream_first_token_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    upstream_timeout_seconds: Annotated[float, Field(gt=0)] = 120.0
    upstream_max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    breaker_failures: Annotated[int, Field(ge=1)] = 5
    breaker_reset_seconds: Annotated[float, Field(gt=0)] = 30.0
    fallback_to_builtin: bool = False
    api_key_cache_ttl_seconds: Annotated[float, Field(ge=0)] = 10.0
    auth_validate_url: str | None = None
    auth_internal_api_key: SecretStr | None = None
    auth_cache_ttl_seconds: Annotated[float, Field(gt=0)] = 300.0
    auth_cache_size: Annotated[int, Field(ge=1)] = 1024
    auth_negative_ttl_seconds: Annotated[float, Field(ge=0)] = 10.0
    auth_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    critical_words: str = Field(
        DEFAULT_CRITICAL_WORDS,
        description="Comma-separated words that flag a feedback comment as critical.",
    )
    sla_uptime_target: Annotated[float, Field(gt=0, lt=1)] = 0.999
    sla_response_time_target: Annotated[float, Field(gt=0)] = 2.0
    request_stats_flush_seconds: Annotated[float, Field(gt=0)] = 15.0
    active_model_refresh_seconds: Annotated[float, Field(gt=0)] = 5.0
    # Label values callers choose (docs/metrics.md, "Cardinality"): these projects, and
    # the first N others seen, keep their own series; later ones are counted as `other`.
    metrics_projects: str = ""
    metrics_max_projects: Annotated[int, Field(ge=0)] = 100
    # Models: the configured one, priced ones and the first N others the upstream names.
    metrics_max_models: Annotated[int, Field(ge=0)] = 20
    knowledge_base: Path | None = None
    escalation_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.35
    builtin_stream_delay_ms: Annotated[float, Field(ge=0.0)] = 0.0
    history_messages: Annotated[int, Field(ge=1, le=1000)] = 20
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    docs_enabled: bool | None = Field(
        None, description="Serve /docs, /redoc and /openapi.json; default: off in production."
    )
    cors_allow_origins: str = Field(
        "", description="Comma-separated origins browsers may call the API from; none by default."
    )
    max_header_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024
    max_headers: Annotated[int, Field(ge=10)] = 100

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from None
        if url.drivername not in _SUPPORTED_DRIVERS:
            raise ValueError(
                f"driver {url.drivername!r} is not supported; use one of "
                + ", ".join(f"{d}://" for d in _SUPPORTED_DRIVERS)
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator(
        "redis_url",
        "otel_exporter_otlp_endpoint",
        "model",
        "prometheus_multiproc_dir",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return value or None

    @field_validator("sentry_dsn")
    @classmethod
    def _check_sentry_dsn(cls, value: str | None) -> str | None:
        if not value:
            return None
        # Sentry's own parser, so a DSN it would refuse stops start-up here, in one line.
        from sentry_sdk.utils import BadDsn, Dsn

        try:
            Dsn(value)
        except BadDsn as exc:
            raise ValueError(f"not a Sentry DSN ({exc})") from None
        return value

    @field_validator("openai_base_url", "auth_validate_url", "s3_endpoint_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("knowledge_base", "pricing_file")
    @classmethod
    def _check_knowledge_base(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> Settings:
        if self.is_sqlite and self.workers > 1 and self.database_path is None:
            raise ValueError("an in-memory SQLite database cannot be shared by several workers")
        if self.inference_backend == "openai":
            if self.openai_base_url is None:
                raise ValueError(f"the openai backend needs {env_name('openai_base_url')}")
            if not self.model:
                raise ValueError(f"the openai backend needs {env_name('model')}")
        if self.upstream_first_token_timeout_seconds > self.upstream_timeout_seconds:
            raise ValueError(
                f"{env_name('upstream_first_token_timeout_seconds')} must not exceed "
                f"{env_name('upstream_timeout_seconds')}"
            )
        return self

    @cached_property
    def database(self) -> URL:
        return make_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.database.get_backend_name() == "sqlite"

    @property
    def database_path(self) -> Path | None:
        """The SQLite file, or None for PostgreSQL and in-memory SQLite."""
        if not self.is_sqlite or self.database.database in (None, "", ":memory:"):
            return None
        return Path(str(self.database.database))

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    @property
    def should_allow_profiling(self) -> bool:
        if self.profiling_enabled is not None:
            return self.profiling_enabled
        return self.environment is not Environment.production

    @property
    def critical_word_list(self) -> list[str]:
        return [w.strip() for w in self.critical_words.split(",") if w.strip()]

    @property
    def metrics_multiprocess_dir(self) -> Path | None:
        """PROMETHEUS_MULTIPROC_DIR when prometheus_client runs on it: it reads the process
        environment (where `chatlens serve --workers N` puts it), never .env; a folder named
        only in .env would be one nothing writes to."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR") is None:
            return None
        return self.prometheus_multiproc_dir

    @property
    def should_serve_docs(self) -> bool:
        if self.docs_enabled is None:
            return self.environment is not Environment.production
        return self.docs_enabled

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_allow_origins.split(",") if o.strip()]

    @property
    def metrics_project_list(self) -> list[str]:
        return [p.strip() for p in self.metrics_projects.split(",") if p.strip()]

    @property
    def version(self) -> str:
        return __version__


def _first_env_name(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return f"{Settings.model_config['env_prefix']}{name.upper()}"


_ENV_NAMES = {name: _first_env_name(name) for name in Settings.model_fields}


_FIELDS_BY_ENV = {env: field for field, env in _ENV_NAMES.items()}


def env_name(field: str) -> str:
    """The environment variable that sets a field."""
    return str(_ENV_NAMES[field])


def load_settings(**overrides: Any) -> Settings:
    """Read settings; an invalid one raises SettingsError with one line naming it."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = str(first["loc"][0]) if first["loc"] else ""
        field = loc if loc in _ENV_NAMES else _FIELDS_BY_ENV.get(loc, loc)
        name = env_name(field) if field in _ENV_NAMES else (loc or "settings")
        message = str(first["msg"]).removeprefix("Value error, ")
        given = first.get("input")
        secret = any(word in field for word in ("url", "key", "dsn", "secret", "password"))
        shown = "" if secret or isinstance(given, dict) else f" (got {given!r})"
        raise SettingsError(f"invalid setting {name}: {message}{shown}") from None
