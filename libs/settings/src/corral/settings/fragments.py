"""The settings every service shares: where the bus is, how to log."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class NatsSettings(BaseSettings):
    """``CORRAL_NATS_URL`` (default ``nats://127.0.0.1:4222``), ``CORRAL_NATS_CONNECT_TIMEOUT_S``,
    ``CORRAL_NATS_RECORD_CHUNK_BYTES`` (a stored record larger than this is stored in parts of at most
    this many bytes; ``0``, the default, means the server's ``max_payload`` less 64 KiB for headers)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_NATS_", frozen=True, extra="ignore")

    url: str = "nats://127.0.0.1:4222"
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
