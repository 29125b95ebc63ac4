"""Settings, read from the environment once by whoever builds an app or a component.

Nothing here runs at import time: `Settings()` is called by the app factory and the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.event_partitions import MAX_RETENTION_DAYS, MIN_RETENTION_DAYS
from schemas.square_environment import API_URLS, SquareEnvironment, environment_of_host
from sluice.logging import LogFormat, LogLevel

AIRTABLE_API_URL = "https://api.airtable.com"
_DEV_FIX = "set {} in the environment or in a .env file, or run this beside a running `sluice dev`"

# Values people paste from examples; a secret equal to one of these is refused at start.
_PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "change_me", "secret", "placeholder", "xxx", "todo"}
)


def is_placeholder(value: str) -> bool:
    """A value copied from an example rather than a real secret: `changeme`, `xxxx`, `<token>`."""
    plain = value.strip().lower()
    return (
        plain in _PLACEHOLDER_SECRETS
        or (len(plain) >= 3 and set(plain) == {"x"})
        or (plain.startswith("<") and plain.endswith(">"))
    )


class SettingError(RuntimeError):
    """A setting is missing or wrong: the operator has to set it; retrying cannot help."""

    def __init__(self, setting: str, problem: str, fix: str | None = None) -> None:
        self.setting = setting
        self.problem = problem
        self.fix = fix or f"set {setting} in the environment or in a .env file"
        super().__init__(f"{setting} {problem}: {self.fix}")


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


def _split_pairs(value: object) -> object:
    """`a=x,b=y` into a dict; split at the first `=` only, as base64 values end in `=`."""
    if not isinstance(value, str):
        return value
    pairs: dict[str, str] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        name, sep, secret = part.partition("=")
        if not sep or not name.strip() or not secret.strip():
            raise ValueError("expected comma-separated webhookId=macSecretBase64 pairs")
        pairs[name.strip()] = secret.strip()
    return pairs


class Settings(BaseSettings):
    # One name per setting, its environment variable's, also when a test builds Settings(...).
    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    kafka_bootstrap_servers: str | None = Field(
        default=None, validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    # Which of Square's environments this deployment takes: its deliveries, keys and API.
    square_environment: SquareEnvironment = Field(
        default="production", validation_alias="SQUARE_ENVIRONMENT"
    )
    square_webhook_signature_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias="SQUARE_WEBHOOK_SIGNATURE_KEYS"
    )
    square_webhook_url: str | None = Field(default=None, validation_alias="SQUARE_WEBHOOK_URL")
    max_body_bytes: int = Field(
        default=1024 * 1024,
        gt=0,
        validation_alias="SLUICE_MAX_BODY_BYTES",
    )
    ingest_writers: int = Field(
        default=4,
        ge=1,
        le=64,
        validation_alias="SLUICE_INGEST_WRITERS",
    )
    ingest_batch_max: int = Field(
        default=256,
        ge=1,
        le=5000,
        validation_alias="SLUICE_INGEST_BATCH_MAX",
    )
    db_pool_size: int = Field(
        default=8,
        ge=1,
        le=200,
        validation_alias="SLUICE_DB_POOL_SIZE",
    )
    # What an unauthenticated client can make an HTTP server (serve, api, admin) hold; see
    # sluice/http_server.py. Sizes as Node's 16 KiB head and Apache's 8 KiB field and 100 fields.
    http_max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        validation_alias="SLUICE_HTTP_MAX_HEADER_BYTES",
    )
    http_max_header_field_bytes: int = Field(
        default=8 * 1024,
        ge=256,
        le=1024 * 1024,
        validation_alias="SLUICE_HTTP_MAX_HEADER_FIELD_BYTES",
    )
    http_max_headers: int = Field(
        default=100,
        ge=10,
        le=10_000,
        validation_alias="SLUICE_HTTP_MAX_HEADERS",
    )
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        validation_alias="SLUICE_HTTP_HEADER_TIMEOUT_SECONDS",
    )
    http_body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        validation_alias="SLUICE_HTTP_BODY_TIMEOUT_SECONDS",
    )
    http_keepalive_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        validation_alias="SLUICE_HTTP_KEEPALIVE_SECONDS",
    )
    http_max_connections: int = Field(
        default=2048,
        ge=1,
        le=1_000_000,
        validation_alias="SLUICE_HTTP_MAX_CONNECTIONS",
    )
    # Bodies of unfinished requests, all connections of one process together: without it,
    # connections stuck a byte short of the body limit hold the cap x the body limit.
    http_max_pending_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        le=1 << 40,
        validation_alias="SLUICE_HTTP_MAX_PENDING_BODY_BYTES",
    )
    log_format: LogFormat = Field(default="auto", validation_alias="SLUICE_LOG_FORMAT")
    log_level: LogLevel = Field(default="info", validation_alias="SLUICE_LOG_LEVEL")

    airtable_webhook_secrets: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict, validation_alias="AIRTABLE_WEBHOOK_SECRETS"
    )
    airtable_api_url: str | None = Field(default=None, validation_alias="AIRTABLE_API_URL")
    airtable_api_key: SecretStr | None = Field(default=None, validation_alias="AIRTABLE_API_KEY")
    airtable_requests_per_second: int = Field(
        default=5,
        ge=1,
        le=50,
        validation_alias="AIRTABLE_REQUESTS_PER_SECOND",
    )
    airtable_rate_limit_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        validation_alias="AIRTABLE_RATE_LIMIT_WAIT_SECONDS",
    )

    kafka_idempotence: bool = Field(
        default=True,
        validation_alias="SLUICE_KAFKA_IDEMPOTENCE",
    )
    kafka_request_timeout_ms: int = Field(
        default=5000,
        ge=100,
        le=120_000,
        validation_alias="SLUICE_KAFKA_REQUEST_TIMEOUT_MS",
    )
    topic_partitions: int = Field(
        default=12,
        ge=1,
        le=1000,
        validation_alias="SLUICE_TOPIC_PARTITIONS",
    )
    topic_replication_factor: int = Field(
        default=1,
        ge=1,
        le=10,
        validation_alias="SLUICE_TOPIC_REPLICATION_FACTOR",
    )
    relay_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        validation_alias="SLUICE_RELAY_LEASE_SECONDS",
    )
    relay_batch_size: int = Field(
        default=2000,
        ge=1,
        le=50_000,
        validation_alias="SLUICE_RELAY_BATCH_SIZE",
    )
    relay_poll_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        validation_alias="SLUICE_RELAY_POLL_SECONDS",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        validation_alias="SLUICE_METRICS_PORT",
    )
    # Run-once jobs (reconcile, webhook refresh) report through a text file and/or a push.
    metrics_textfile_dir: Path | None = Field(
        default=None,
        validation_alias="SLUICE_METRICS_TEXTFILE_DIR",
    )
    pushgateway_url: str | None = Field(
        default=None,
        validation_alias="SLUICE_PUSHGATEWAY_URL",
    )
    tracing: Literal["off", "otlp", "console"] = Field(
        default="off", validation_alias="SLUICE_TRACING"
    )

    consumer_group_prefix: str = Field(
        default="sluice.",
        validation_alias="SLUICE_CONSUMER_GROUP_PREFIX",
    )
    consumer_batch_max: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        validation_alias="SLUICE_CONSUMER_BATCH_MAX",
    )
    consumer_fetch_wait_ms: int = Field(
        default=20,
        ge=0,
        le=10_000,
        validation_alias="SLUICE_CONSUMER_FETCH_WAIT_MS",
    )
    consumer_session_timeout_ms: int = Field(
        default=10_000,
        ge=500,
        le=300_000,
        validation_alias="SLUICE_CONSUMER_SESSION_TIMEOUT_MS",
    )
    consumer_retry_max_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        validation_alias="SLUICE_CONSUMER_RETRY_MAX_SECONDS",
    )
    dlq_max_ratio: float = Field(
        default=0.1,
        ge=0,
        le=1,
        validation_alias="SLUICE_DLQ_MAX_RATIO",
    )
    dlq_window: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        validation_alias="SLUICE_DLQ_WINDOW",
    )

    # Recovery: the backstop reconciler, replay and the admin trigger (recovery/).
    # Unset: the configured environment's API (`square_endpoint`).
    square_api_url: str | None = Field(default=None, validation_alias="SQUARE_API_URL")
    square_access_token: SecretStr | None = Field(
        default=None, validation_alias="SQUARE_ACCESS_TOKEN"
    )
    square_requests_per_second: float = Field(
        default=20.0,
        gt=0,
        le=1000,
        validation_alias="SQUARE_REQUESTS_PER_SECOND",
    )
    square_breaker_threshold: int = Field(
        default=5,
        ge=1,
        le=1000,
        validation_alias="SQUARE_BREAKER_THRESHOLD",
    )
    square_breaker_reset_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        validation_alias="SQUARE_BREAKER_RESET_SECONDS",
    )
    # How far ahead the wide run (`reconcile square --ahead`, nightly) sweeps bookings, and how
    # far back before a watermark each run looks again (late-indexed events, clock skew).
    square_reconcile_ahead_days: int = Field(
        default=90, ge=1, le=730, validation_alias="SQUARE_RECONCILE_AHEAD_DAYS"
    )
    # Whether a Square reconcile run searches Square's events first (it enables event search
    # for the application; events of a period with search disabled are never searchable).
    square_search_events: bool = Field(default=True, validation_alias="SQUARE_SEARCH_EVENTS")
    square_recovery_overlap_minutes: int = Field(
        default=60, ge=0, le=1440, validation_alias="SQUARE_RECOVERY_OVERLAP_MINUTES"
    )
    admin_token: SecretStr | None = Field(default=None, validation_alias="SLUICE_ADMIN_TOKEN")
    # The console's login session (recovery/console/): how long it lasts, and whether its cookie
    # is sent over HTTPS only (off only for `sluice dev`, which serves plain HTTP on localhost).
    console_session_minutes: int = Field(
        default=480, ge=5, le=7 * 24 * 60, validation_alias="SLUICE_CONSOLE_SESSION_MINUTES"
    )
    console_secure_cookie: bool = Field(
        default=True, validation_alias="SLUICE_CONSOLE_SECURE_COOKIE"
    )

    # The App API and Airtable write-back (api/, consumers/airtable_writeback.py).
    api_token: SecretStr | None = Field(default=None, validation_alias="SLUICE_API_TOKEN")
    # Whether every single-row change must say which version it changes (If-Match): without
    # it, two staff members editing one row can overwrite each other's edit.
    api_require_if_match: bool = Field(
        default=False, validation_alias="SLUICE_API_REQUIRE_IF_MATCH"
    )
    # Browser front ends on other origins that may call the API (exact origins, or `*`).
    api_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="SLUICE_API_CORS_ORIGINS"
    )
    idempotency_ttl_seconds: int = Field(
        default=86_400,
        ge=60,
        le=30 * 86_400,
        validation_alias="SLUICE_IDEMPOTENCY_TTL_SECONDS",
    )
    dedupe_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        validation_alias="SLUICE_DEDUPE_RETENTION_DAYS",
    )
    # How long dead letters are kept (0: until deleted by hand); they are on each topic's `.dlq`
    # topic too, for as long as Kafka keeps it.
    dead_letter_retention_days: int = Field(
        default=90, ge=0, le=3650, validation_alias="SLUICE_DEAD_LETTER_RETENTION_DAYS"
    )
    # The event store keeps whole weeks (schemas/event_partitions.py) and drops a week once all
    # of it is this old; 0 keeps every event. Below 28 days Square's event search could bring
    # back an event already dropped, so that is the least (ingest/partitions.py).
    event_retention_days: int = Field(default=90, validation_alias="SLUICE_EVENT_RETENTION_DAYS")
    changes_retention_seconds: int = Field(
        default=86_400,
        ge=60,
        le=30 * 86_400,
        validation_alias="SLUICE_CHANGES_RETENTION_SECONDS",
    )
    airtable_user_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="AIRTABLE_USER_ID"
    )
    airtable_breaker_threshold: int = Field(
        default=5,
        ge=1,
        le=1000,
        validation_alias="AIRTABLE_BREAKER_THRESHOLD",
    )
    airtable_breaker_reset_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        validation_alias="AIRTABLE_BREAKER_RESET_SECONDS",
    )

    @field_validator("database_url")
    @classmethod
    def _normalise_dsn(cls, value: str | None) -> str | None:
        return None if value is None else normalise_database_url(value)

    @field_validator(
        "square_webhook_signature_keys", "airtable_user_ids", "api_cors_origins", mode="before"
    )
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("square_webhook_signature_keys")
    @classmethod
    def _refuse_placeholders(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            if is_placeholder(key.get_secret_value()):
                raise ValueError("a placeholder value is not a signature key")
        return keys

    @field_validator("event_retention_days")
    @classmethod
    def _retention(cls, days: int) -> int:
        if days != 0 and not MIN_RETENTION_DAYS <= days <= MAX_RETENTION_DAYS:
            raise ValueError(
                f"keep events {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS} days, or 0 to keep"
                f" every event ({MIN_RETENTION_DAYS} days: Square's event search reaches that"
                " far back, and must find every event it brings back still stored)"
            )
        return days

    @field_validator("api_cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            exact = parts.scheme in ("http", "https") and parts.netloc and not parts.path
            if origin != "*" and not (exact and not parts.query and not parts.fragment):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port]) or *")
        return origins

    @field_validator("square_access_token", "admin_token", "api_token")
    @classmethod
    def _refuse_placeholder_tokens(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and is_placeholder(token.get_secret_value()):
            raise ValueError("a placeholder value is not a token")
        return token

    def require_square_access_token(self) -> str:
        if self.square_access_token is None:
            raise SettingError("SQUARE_ACCESS_TOKEN", "is not set")
        return self.square_access_token.get_secret_value()

    @field_validator("airtable_webhook_secrets", mode="before")
    @classmethod
    def _split_webhook_secrets(cls, value: object) -> object:
        return _split_pairs(value)

    @field_validator("airtable_webhook_secrets")
    @classmethod
    def _refuse_placeholder_macs(cls, secrets: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for webhook_id, secret in secrets.items():
            if not webhook_id.startswith("ach"):
                raise ValueError("AIRTABLE_WEBHOOK_SECRETS keys must be webhook ids (ach...)")
            if is_placeholder(secret.get_secret_value()):
                raise ValueError("a placeholder value is not a MAC secret")
        return secrets

    @property
    def square_endpoint(self) -> str:
        return (self.square_api_url or API_URLS[self.square_environment]).rstrip("/")

    @model_validator(mode="after")
    def _api_in_environment(self) -> Settings:
        # A fake or a proxy may stand in for Square; the other environment's API may not: the
        # reconciler would write that environment's bookings into these tables.
        if self.square_api_url:
            other = environment_of_host(urlsplit(self.square_api_url).hostname or "")
            if other is not None and other != self.square_environment:
                raise ValueError(
                    f"SQUARE_API_URL is Square's {other} API, but SQUARE_ENVIRONMENT is "
                    f"{self.square_environment}: unset SQUARE_API_URL, or set it to "
                    f"{API_URLS[self.square_environment]}"
                )
        return self

    @property
    def airtable_endpoint(self) -> str:
        return (self.airtable_api_url or AIRTABLE_API_URL).rstrip("/")

    def require_airtable_api_key(self) -> str:
        if self.airtable_api_key is None:
            raise SettingError("AIRTABLE_API_KEY", "is not set")
        return self.airtable_api_key.get_secret_value()

    @model_validator(mode="after")
    def _lease_outlasts_delivery(self) -> Settings:
        # A send can take up to about three request timeouts (metadata, queueing, the request);
        # a bucket lease must outlast that, or two relays could publish one bucket at once.
        if self.relay_lease_seconds * 1000 < 4 * self.kafka_request_timeout_ms:
            raise ValueError(
                "SLUICE_RELAY_LEASE_SECONDS must be at least 4 x SLUICE_KAFKA_REQUEST_TIMEOUT_MS"
            )
        return self

    @model_validator(mode="after")
    def _field_fits_in_head(self) -> Settings:
        if self.http_max_header_field_bytes > self.http_max_header_bytes:
            raise ValueError(
                "SLUICE_HTTP_MAX_HEADER_FIELD_BYTES must not exceed SLUICE_HTTP_MAX_HEADER_BYTES"
            )
        if self.http_max_pending_body_bytes < self.max_body_bytes:
            raise ValueError(
                "SLUICE_HTTP_MAX_PENDING_BODY_BYTES must be at least SLUICE_MAX_BODY_BYTES"
            )
        return self

    @property
    def square_verification_configured(self) -> bool:
        return bool(self.square_webhook_signature_keys) and bool(self.square_webhook_url)

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise SettingError("DATABASE_URL", "is not set", _DEV_FIX.format("DATABASE_URL"))
        return self.database_url

    def require_kafka(self) -> str:
        if self.kafka_bootstrap_servers is None:
            raise SettingError(
                "KAFKA_BOOTSTRAP_SERVERS", "is not set", _DEV_FIX.format("KAFKA_BOOTSTRAP_SERVERS")
            )
        return self.kafka_bootstrap_servers
