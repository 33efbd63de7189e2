"""sandbox-manager settings (env prefix ``CORRAL_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.settings import LogSettings, NatsSettings


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_", frozen=True, extra="ignore")

    docker_host: str | None = Field(
        default=None, description="Docker engine address (CORRAL_DOCKER_HOST); unset = the docker SDK's default"
    )
    health_probe_timeout_s: float = Field(default=2.0, gt=0)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
