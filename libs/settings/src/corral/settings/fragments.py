"""The settings every service shares: where the bus is, how to log."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    url: str = "nats://127.0.0.1:4222"
    user: str | None = None
    password: SecretStr | None = None
    connect_timeout_s: float = Field(default=5.0, gt=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    record_chunk_bytes: int = Field(default=0, ge=0)


class LogSettings(BaseSettings):
    """``CORRAL_LOG_LEVEL`` (default ``INFO``), ``CORRAL_LOG_FORMAT`` (``json`` or ``text``)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_LOG_", frozen=True, extra="ignore")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class TelemetrySettings(BaseSettings):
    """OpenTelemetry export: the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (unset = no export)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
