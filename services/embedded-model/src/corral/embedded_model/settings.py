"""Settings, read from ``CORRAL_EMBEDDED_MODEL_*`` (and the shared ``CORRAL_LOG_*``) variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.settings import LogSettings, MetricsSettings


class EmbeddedModelMetricsSettings(MetricsSettings):
    """Its metrics endpoint: ``CORRAL_EMBEDDED_MODEL_METRICS_PORT`` and ``CORRAL_EMBEDDED_MODEL_METRICS_HOST``."""

    model_config = SettingsConfigDict(
        env_prefix="CORRAL_EMBEDDED_MODEL_METRICS_", frozen=True, extra="ignore", env_ignore_empty=True
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CORRAL_EMBEDDED_MODEL_", env_ignore_empty=True, frozen=True, extra="ignore"
    )

    host: str = Field(default="127.0.0.1", description="address the Messages API listens on")
    port: int = Field(default=8090, ge=0, le=65535, description="port of the Messages API")
    script: Path | None = Field(default=None, description="JSON script document loaded at start")
    max_input_tokens: int | None = Field(
        default=None, ge=1, description="Refuse larger requests with the real API's 'prompt is too long' error"
    )
    max_recorded_requests: int = Field(default=500, ge=1, description="Size of the /_corral/requests ring")
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: EmbeddedModelMetricsSettings = Field(default_factory=EmbeddedModelMetricsSettings)
