"""Every setting of chatlens, read from the environment in one place."""

from __future__ import annotations

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


def _env(name: str, *, prefixed: bool = True) -> Any:
    # Standard variables (DATABASE_URL, LOG_LEVEL, ...) are read unprefixed; ours carry CHATLENS_.
    return AliasChoices(f"CHATLENS_{name}" if prefixed else name)


class Settings(BaseSettings):
    """chatlens configuration; see the README's configuration table."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    environment: Environment = Field(Environment.development, validation_alias=_env("ENVIRONMENT"))
    database_url: str = Field(
        "sqlite+aiosqlite:///./chatlens.db", validation_alias=_env("DATABASE_URL", prefixed=False)
    )
    database_pool_size: Annotated[int, Field(ge=1)] = Field(
        10, validation_alias=_env("DATABASE_POOL_SIZE")
    )
    database_echo: bool = Field(False, validation_alias=_env("DATABASE_ECHO"))
    auto_migrate: bool | None = Field(
        None,
        validation_alias=_env("AUTO_MIGRATE"),
        description="Upgrade the schema on start; default: on for SQLite, off for PostgreSQL.",
    )
    bootstrap_admin: bool = Field(True, validation_alias=_env("BOOTSTRAP_ADMIN"))

    host: str = Field("127.0.0.1", validation_alias=_env("HOST"))
    port: Annotated[int, Field(ge=1, le=65535)] = Field(8000, validation_alias=_env("PORT"))
    workers: Annotated[int, Field(ge=1)] = Field(1, validation_alias=_env("WORKERS"))

    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL", prefixed=False))
    log_format: Literal["json", "console"] = Field(
        "json", validation_alias=_env("LOG_FORMAT", prefixed=False)
    )
    log_message_content: bool = Field(False, validation_alias=_env("LOG_MESSAGE_CONTENT"))
    access_log: bool = Field(True, validation_alias=_env("ACCESS_LOG"))
    metrics_enabled: bool = Field(True, validation_alias=_env("METRICS_ENABLED"))
    tracing_enabled: bool = Field(True, validation_alias=_env("TRACING_ENABLED"))
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ),
    )
    sentry_dsn: str | None = Field(None, validation_alias=_env("SENTRY_DSN", prefixed=False))
    sentry_traces_sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.0, validation_alias=_env("SENTRY_TRACES_SAMPLE_RATE")
    )
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("CHATLENS_REDIS_URL", "REDIS_URL")
    )
    s3_endpoint_url: str | None = Field(None, validation_alias=_env("S3_ENDPOINT_URL"))
    active_sessions_window_s: Annotated[int, Field(ge=60)] = Field(
        900, validation_alias=_env("ACTIVE_SESSIONS_WINDOW_SECONDS")
    )
    active_sessions_refresh_s: Annotated[float, Field(gt=0)] = Field(
        30.0, validation_alias=_env("ACTIVE_SESSIONS_REFRESH_SECONDS")
    )

    inference_backend: Literal["builtin", "openai"] = Field(
        "builtin", validation_alias=_env("INFERENCE_BACKEND")
    )
    openai_base_url: str | None = Field(None, validation_alias=_env("OPENAI_BASE_URL"))
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    model: str | None = Field(None, validation_alias=_env("MODEL"))
    pricing_file: Path | None = Field(None, validation_alias=_env("PRICING_FILE"))
    upstream_connect_timeout_s: Annotated[float, Field(gt=0)] = Field(
        5.0, validation_alias=_env("UPSTREAM_CONNECT_TIMEOUT_SECONDS")
    )
    upstream_first_token_timeout_s: Annotated[float, Field(gt=0)] = Field(
        30.0, validation_alias=_env("UPSTREAM_FIRST_TOKEN_TIMEOUT_SECONDS")
    )
    upstream_timeout_s: Annotated[float, Field(gt=0)] = Field(
        120.0, validation_alias=_env("UPSTREAM_TIMEOUT_SECONDS")
    )
    upstream_max_retries: Annotated[int, Field(ge=0, le=10)] = Field(
        2, validation_alias=_env("UPSTREAM_MAX_RETRIES")
    )
    breaker_failures: Annotated[int, Field(ge=1)] = Field(
        5, validation_alias=_env("BREAKER_FAILURES")
    )
    breaker_reset_s: Annotated[float, Field(gt=0)] = Field(
        30.0, validation_alias=_env("BREAKER_RESET_SECONDS")
    )
    fallback_to_builtin: bool = Field(False, validation_alias=_env("FALLBACK_TO_BUILTIN"))
    api_key_cache_ttl_s: Annotated[float, Field(ge=0)] = Field(
        10.0, validation_alias=_env("API_KEY_CACHE_TTL_SECONDS")
    )
    auth_validate_url: str | None = Field(None, validation_alias=_env("AUTH_VALIDATE_URL"))
    auth_internal_api_key: SecretStr | None = Field(
        None, validation_alias=_env("AUTH_INTERNAL_API_KEY")
    )
    auth_cache_ttl_s: Annotated[float, Field(gt=0)] = Field(
        300.0, validation_alias=_env("AUTH_CACHE_TTL_SECONDS")
    )
    auth_cache_size: Annotated[int, Field(ge=1)] = Field(
        1024, validation_alias=_env("AUTH_CACHE_SIZE")
    )
    auth_negative_ttl_s: Annotated[float, Field(ge=0)] = Field(
        10.0, validation_alias=_env("AUTH_NEGATIVE_TTL_SECONDS")
    )
    auth_timeout_s: Annotated[float, Field(gt=0)] = Field(
        5.0, validation_alias=_env("AUTH_TIMEOUT_SECONDS")
    )
    critical_words: str = Field(
        DEFAULT_CRITICAL_WORDS,
        validation_alias=_env("CRITICAL_WORDS"),
        description="Comma-separated words that flag a feedback comment as critical.",
    )
    sla_uptime_target: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.999, validation_alias=_env("SLA_UPTIME_TARGET")
    )
    sla_response_time_target_s: Annotated[float, Field(gt=0)] = Field(
        2.0, validation_alias=_env("SLA_RESPONSE_TIME_TARGET")
    )
    request_stats_flush_s: Annotated[float, Field(gt=0)] = Field(
        15.0, validation_alias=_env("REQUEST_STATS_FLUSH_SECONDS")
    )
    active_model_refresh_s: Annotated[float, Field(gt=0)] = Field(
        5.0, validation_alias=_env("ACTIVE_MODEL_REFRESH_SECONDS")
    )
    knowledge_base: Path | None = Field(None, validation_alias=_env("KNOWLEDGE_BASE"))
    escalation_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.35, validation_alias=_env("ESCALATION_THRESHOLD")
    )
    builtin_stream_delay_ms: Annotated[float, Field(ge=0.0)] = Field(
        0.0, validation_alias=_env("BUILTIN_STREAM_DELAY_MS")
    )
    history_messages: Annotated[int, Field(ge=1, le=1000)] = Field(
        20, validation_alias=_env("HISTORY_MESSAGES")
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        64 * 1024, validation_alias=_env("MAX_BODY_BYTES")
    )

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

    @field_validator("redis_url", "otel_exporter_otlp_endpoint", "model")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
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
        if self.upstream_first_token_timeout_s > self.upstream_timeout_s:
            raise ValueError(
                f"{env_name('upstream_first_token_timeout_s')} must not exceed "
                f"{env_name('upstream_timeout_s')}"
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
    def critical_word_list(self) -> list[str]:
        return [w.strip() for w in self.critical_words.split(",") if w.strip()]

    @property
    def version(self) -> str:
        return __version__


_ENV_NAMES = {
    name: (
        field.validation_alias.choices[0]
        if isinstance(field.validation_alias, AliasChoices)
        else name.upper()
    )
    for name, field in Settings.model_fields.items()
}


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
