"""session-store settings (env prefix ``CORRAL_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.settings import LogSettings, NatsSettings, renamed


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_", frozen=True, extra="ignore")

    database_url: str = Field(description="asyncpg DSN of the projection database (CORRAL_DATABASE_URL)")
    bootstrap_api_key: SecretStr | None = Field(
        default=None, description="An API key registered at start-up if new (CORRAL_BOOTSTRAP_API_KEY)"
    )
    bootstrap_workspace: str = Field(default="default", description="the workspace of that key")
    lease_ttl_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias=renamed("CORRAL_HARNESS_LEASE_TTL_S", "CORRAL_LEASE_TTL_S"),
        description="the lease bucket's TTL; a harness with another lease TTL refuses to start",
    )
    state_cache_size: int = Field(default=10_000, ge=1, description="sessions whose folded state is kept in memory")
    events_page_bytes: int = Field(
        default=512 * 1024,
        ge=1,
        description="Bytes of events one events.list page holds at most, besides its count limit; a page "
        "always holds one event, however large (CORRAL_EVENTS_PAGE_BYTES)",
    )
    nats: NatsSettings = Field(default_factory=NatsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
