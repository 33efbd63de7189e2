"""The settings several services share, one fragment per dependency: the bus (``CORRAL_NATS_*``), the
projection database (``CORRAL_POSTGRES_*``), logging (``CORRAL_LOG_*``), telemetry (``OTEL_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.settings.renames import renamed


class NatsSettings(BaseSettings):
    """``CORRAL_NATS_URL`` (default ``nats://127.0.0.1:4222``), ``CORRAL_NATS_CONNECT_TIMEOUT_S``,
    ``CORRAL_NATS_REQUEST_TIMEOUT_S``, ``CORRAL_NATS_RECORD_CHUNK_BYTES`` (a stored record larger than
    this is stored in parts of at most this many bytes; ``0``, the default, means the server's
    ``max_payload`` less 64 KiB for headers), and the service's own NATS user: ``CORRAL_NATS_USER`` and
    ``CORRAL_NATS_PASSWORD`` (unset: connect without credentials, which a server with users refuses).

    ``make up`` gives each service its own user, allowed to publish and subscribe only on the
    subjects that service uses (see ``corral.devstack.nats_users``).
    """

    model_config = SettingsConfigDict(env_prefix="CORRAL_NATS_", frozen=True, extra="ignore")

    url: str = Field(default="nats://127.0.0.1:4222", description="the NATS server")
    user: str | None = Field(default=None, description="this service's NATS user (`make up` gives each its own)")
    password: SecretStr | None = Field(default=None, description="that user's password")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="longest wait for each connection attempt")
    request_timeout_s: float = Field(default=10.0, gt=0, description="deadline of a bus request without its own")
    record_chunk_bytes: int = Field(
        default=0,
        ge=0,
        description="a stored record larger than this is stored in parts of at most this size "
        "(0: the server's max_payload less 64 KiB)",
    )


class PostgresSettings(BaseSettings):
    """``CORRAL_POSTGRES_URL``: the asyncpg DSN of the projection database (required by whoever nests
    this fragment; the old ``CORRAL_DATABASE_URL`` still works for one release, with a warning)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_POSTGRES_", frozen=True, extra="ignore", populate_by_name=True)

    url: str = Field(
        validation_alias=renamed("CORRAL_POSTGRES_URL", "CORRAL_DATABASE_URL"),
        description="asyncpg DSN of the projection database (postgresql://user:password@host:port/database)",
    )


class LogSettings(BaseSettings):
    """``CORRAL_LOG_LEVEL`` (default ``INFO``), ``CORRAL_LOG_FORMAT`` (``json`` or ``text``)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_LOG_", frozen=True, extra="ignore")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="the least severe records logged"
    )
    format: Literal["json", "text"] = Field(default="json", description="JSON lines, or text for a terminal")


class TelemetrySettings(BaseSettings):
    """OpenTelemetry export: the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (unset = no export)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="export traces over OTLP/HTTP to this endpoint (e.g. Jaeger's); unset: no export",
    )
