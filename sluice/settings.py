"""Settings, read from the environment once by whoever builds an app or a component.

Nothing here runs at import time: `Settings()` is called by the app factory and the CLI.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values people paste from examples; a secret equal to one of these is refused at start.
_PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "placeholder", "xxx", "todo"})


def normalise_database_url(url: str) -> str:
    """Accept the usual spellings of a PostgreSQL DSN and pin the psycopg 3 driver."""
    for prefix in (
        "postgres://",
        "postgresql://",
        "postgresql+psycopg2://",
        "postgresql+asyncpg://",
    ):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    if not url.startswith("postgresql+psycopg://"):
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    return url


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    square_webhook_signature_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias="SQUARE_WEBHOOK_SIGNATURE_KEYS"
    )
    square_webhook_url: str | None = Field(default=None, validation_alias="SQUARE_WEBHOOK_URL")
    max_body_bytes: int = Field(
        default=1024 * 1024,
        gt=0,
        validation_alias=AliasChoices("SLUICE_MAX_BODY_BYTES", "max_body_bytes"),
    )
    ingest_writers: int = Field(
        default=4,
        ge=1,
        le=64,
        validation_alias=AliasChoices("SLUICE_INGEST_WRITERS", "ingest_writers"),
    )
    ingest_batch_max: int = Field(
        default=256,
        ge=1,
        le=5000,
        validation_alias=AliasChoices("SLUICE_INGEST_BATCH_MAX", "ingest_batch_max"),
    )
    db_pool_size: int = Field(
        default=8,
        ge=1,
        le=200,
        validation_alias=AliasChoices("SLUICE_DB_POOL_SIZE", "db_pool_size"),
    )
    log_format: str = Field(
        default="auto",
        pattern="^(auto|json|console)$",
        validation_alias=AliasChoices("SLUICE_LOG_FORMAT", "log_format"),
    )
    log_level: str = Field(
        default="info",
        pattern="^(debug|info|warning|error)$",
        validation_alias=AliasChoices("SLUICE_LOG_LEVEL", "log_level"),
    )

    @field_validator("database_url")
    @classmethod
    def _normalise_dsn(cls, value: str | None) -> str | None:
        return None if value is None else normalise_database_url(value)

    @field_validator("square_webhook_signature_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("square_webhook_signature_keys")
    @classmethod
    def _refuse_placeholders(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            if key.get_secret_value().strip().lower() in _PLACEHOLDER_SECRETS:
                raise ValueError("a placeholder value is not a signature key")
        return keys

    @property
    def square_verification_configured(self) -> bool:
        return bool(self.square_webhook_signature_keys) and bool(self.square_webhook_url)

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise RuntimeError("DATABASE_URL is not set (use `sluice dev` for embedded defaults)")
        return self.database_url

    def require_kafka(self) -> str:
        if self.kafka_bootstrap_servers is None:
            raise RuntimeError(
                "KAFKA_BOOTSTRAP_SERVERS is not set (use `sluice dev` for embedded defaults)"
            )
        return self.kafka_bootstrap_servers
