"""credential-proxy settings (env prefix ``CORRAL_``). Only this service ever gets the vault token."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.settings import LogSettings, NatsSettings


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_", frozen=True, extra="ignore")

    vault_addr: str = Field(default="http://127.0.0.1:8200", description="OpenBao/Vault address (CORRAL_VAULT_ADDR)")
    vault_token: SecretStr | None = Field(default=None, description="OpenBao/Vault token (CORRAL_VAULT_TOKEN)")
    health_probe_timeout_s: float = Field(default=2.0, gt=0)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
