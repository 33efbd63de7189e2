"""session-store settings: its own knobs under ``CORRAL_SESSION_STORE_*``, the shared
``CORRAL_POSTGRES_*``, ``CORRAL_NATS_*`` and ``CORRAL_LOG_*``, and the harness's lease TTL (one fact,
one variable: ``CORRAL_HARNESS_LEASE_TTL_S``). Names used before the one naming scheme still work for
one release, with a deprecation warning."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.settings import LogSettings, MetricsSettings, NatsSettings, PostgresSettings, renamed


class SessionStoreMetricsSettings(MetricsSettings):
    """Its metrics endpoint: ``CORRAL_SESSION_STORE_METRICS_PORT`` and ``CORRAL_SESSION_STORE_METRICS_HOST``."""

    model_config = SettingsConfigDict(
        env_prefix="CORRAL_SESSION_STORE_METRICS_", frozen=True, extra="ignore", env_ignore_empty=True
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CORRAL_SESSION_STORE_", frozen=True, extra="ignore", populate_by_name=True
    )

    bootstrap_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=renamed("CORRAL_SESSION_STORE_BOOTSTRAP_API_KEY", "CORRAL_BOOTSTRAP_API_KEY"),
        description="an API key registered (by its hash) at start-up if new",
    )
    bootstrap_admin_key: SecretStr | None = Field(
        default=None,
        validation_alias="CORRAL_SESSION_STORE_BOOTSTRAP_ADMIN_KEY",
        description="an admin API key (role admin: may call /v1/organizations/...) registered (by its hash) "
        "at start-up if new, in the bootstrap workspace",
    )
    bootstrap_workspace: str = Field(
        default="default",
        validation_alias=renamed("CORRAL_SESSION_STORE_BOOTSTRAP_WORKSPACE", "CORRAL_BOOTSTRAP_WORKSPACE"),
        description="the workspace of that key",
    )
    lease_ttl_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias=renamed("CORRAL_HARNESS_LEASE_TTL_S", "CORRAL_LEASE_TTL_S"),
        description="the lease bucket's TTL; a harness with another lease TTL refuses to start",
    )
    state_cache_size: int = Field(
        default=10_000,
        ge=1,
        validation_alias=renamed("CORRAL_SESSION_STORE_STATE_CACHE_SIZE", "CORRAL_STATE_CACHE_SIZE"),
        description="sessions whose folded state is kept in memory",
    )
    events_page_bytes: int = Field(
        default=512 * 1024,
        ge=1,
        validation_alias=renamed("CORRAL_SESSION_STORE_EVENTS_PAGE_BYTES", "CORRAL_EVENTS_PAGE_BYTES"),
        description="bytes of events one events.list page holds at most, besides its count limit; a page "
        "always holds one event, however large",
    )
    subscriber_mirrors: bool = Field(
        default=False,
        validation_alias="CORRAL_SESSION_STORE_SUBSCRIBER_MIRRORS",
        description="keep mirrors of the session log and the catalog in the external subscribers' NATS account "
        "(its JetStream API imported as $JS.SUBSCRIBERS.API): made at start-up, a deleted session's history "
        "purged from them too",
    )
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: SessionStoreMetricsSettings = Field(default_factory=SessionStoreMetricsSettings)
