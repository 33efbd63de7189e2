"""The harness's configuration, read from the environment in ``main()`` (never at import time).

Worker knobs use the ``CORRAL_HARNESS_`` prefix. The model endpoint uses the names every Corral
process agrees on: ``CORRAL_MODEL_BASE_URL`` and ``CORRAL_MODEL_API_KEY`` (a Messages-API server
such as the embedded model), else ``ANTHROPIC_API_KEY`` (the Anthropic API itself).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.contracts.sandbox import EXECUTE_HEARTBEAT_INTERVAL_S
from corral.harness.crashpoints import NAMES as CRASHPOINTS
from corral.harness.pricing import load_prices
from corral.settings import LogSettings, MetricsSettings, NatsSettings

#: Sent as the API key to a model server configured without one (the embedded model ignores it).
PLACEHOLDER_API_KEY = "corral-no-key"

_NO_MODEL = (
    "no model is configured: set CORRAL_MODEL_BASE_URL to a Messages-API server (for example the "
    "embedded model, http://127.0.0.1:<port>), or set a real Anthropic key in CORRAL_MODEL_API_KEY "
    "or ANTHROPIC_API_KEY"
)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class HarnessMetricsSettings(MetricsSettings):
    """Its metrics endpoint: ``CORRAL_HARNESS_METRICS_PORT`` and ``CORRAL_HARNESS_METRICS_HOST``."""

    model_config = SettingsConfigDict(
        env_prefix="CORRAL_HARNESS_METRICS_", frozen=True, extra="ignore", env_ignore_empty=True
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CORRAL_HARNESS_", frozen=True, extra="ignore", env_ignore_empty=True, use_attribute_docstrings=True
    )

    worker_id: str = Field(default_factory=default_worker_id, min_length=1)
    """This worker's name: the holder recorded on the leases it takes, and in its logs and health answers."""
    lease_ttl_s: float = Field(default=10.0, gt=0)
    """A session lease not renewed for this long lapses (another worker may take the session); the
    session-store makes the lease bucket with it, and a harness with another value refuses to start."""
    ack_wait_s: float = Field(default=30.0, gt=0)
    """A wake-up this worker took but did not acknowledge for this long is delivered again (to any worker)."""
    max_model_retries: int = Field(default=3, ge=0)
    """Retries of a model request after a failure asking again may fix (429, 5xx, a lost connection) before the turn
    ends with the error."""
    retry_backoff_s: float = Field(default=1.0, ge=0)
    """Wait before the first retry of a model request; each further wait doubles."""
    retry_backoff_max_s: float = Field(default=30.0, ge=0)
    """Longest wait between two retries of a model request."""
    max_tokens: int = Field(default=4096, ge=1)
    """``max_tokens`` of each model request of a turn."""
    max_tool_uses_per_turn: int = Field(default=200, ge=1)
    """Tool calls one turn may make before it ends with ``tool_use_limit_reached_error``."""
    concurrency: int = Field(default=8, ge=1)
    """Sessions this worker runs at once."""
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    """At a stop, how long running sessions get to reach a step boundary before they are cancelled (another
    worker resumes them from the log)."""
    fetch_timeout_s: float = Field(default=1.0, gt=0)
    """Longest wait of each fetch of wake-ups (a stop is noticed at the latest this long after it is asked)."""
    mcp_list_timeout_s: float = Field(default=45.0, gt=0)
    """Longest wait for an MCP server's tool list through the credential-proxy (then the turn goes on
    without that server's tools, after a ``session.error``); above the proxy's connect + list timeouts."""
    mcp_call_timeout_s: float = Field(default=135.0, gt=0)
    """Longest wait for an MCP tool call through the credential-proxy (then an error result); above
    the proxy's ``CORRAL_CREDENTIAL_PROXY_MCP_CALL_TIMEOUT_S``."""
    execute_silence_s: float = Field(default=5.0, gt=EXECUTE_HEARTBEAT_INTERVAL_S)
    """No heartbeat from the sandbox-manager serving a tool call for this long: it is gone; re-dispatch."""
    execute_redispatch_wait_s: float = Field(default=60.0, ge=0)
    """After a lost manager, how long a re-dispatched call waits for one to answer."""
    execute_max_redispatches: int = Field(default=3, ge=0)
    """Lost managers one tool call survives before its result is "outcome unknown"."""
    sandbox_wait_s: float = Field(default=30.0, ge=0)
    """When no sandbox-manager answers a provision or a tool call (all stopped or restarting), how long the
    call waits for one to come back before the tool call is answered with an error (0: answer at once)."""
    context_window_tokens: int | None = Field(default=None, ge=1)
    """Overrides the per-model context window table (``corral.harness.context.CONTEXT_WINDOWS``)."""
    compact_threshold: float = Field(default=0.8, gt=0, le=1)
    """Compact once a request reaches this share of the context window."""
    keep_tool_results: int = Field(default=3, ge=0)
    """The newest tool results compaction never clears."""
    tool_result_max_chars: int = Field(default=100_000, ge=1_000)
    """A longer tool result is truncated in the conversation (the log keeps it whole)."""
    summary_max_tokens: int = Field(default=2048, ge=64)
    """``max_tokens`` of a compaction summary request."""
    count_tokens: bool = True
    """Ask the model's ``count_tokens`` endpoint for request sizes (else estimate only)."""
    snapshot_every_events: int = Field(default=200, ge=1)
    """Events folded since the last snapshot of a session before the lease holder writes another."""
    kept_folds: int = Field(default=64, ge=0)
    """Folds of the sessions this harness let go most recently kept in memory, so a session's next
    turn here follows the log from where it stopped instead of reading its snapshot back (0: none)."""
    lease_wait_s: float = Field(default=15.0, ge=0)
    """How long a wake-up that finds the session leased waits for the holder to let it go."""
    model_prices: str | None = None
    """Overrides or extends the list price table session budgets are measured with
    (``corral.harness.pricing.DEFAULT_PRICES``): a JSON object, or the path of a JSON file,
    ``{"<model id prefix>": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}}``
    in USD per million tokens."""
    crashpoint: str | None = Field(default=None, validation_alias="CORRAL_HARNESS_CRASHPOINT")
    """Test-only: exit with status 137 at this step boundary (see ``corral.harness.crashpoints``)."""

    model_base_url: str | None = Field(default=None, validation_alias="CORRAL_MODEL_BASE_URL")
    """The Messages-API server the model requests go to (the embedded model, a proxy); unset: the Anthropic API."""
    model_api_key: SecretStr | None = Field(default=None, validation_alias="CORRAL_MODEL_API_KEY")
    """The key sent to that server (unset with a base URL: a placeholder, which the embedded model ignores)."""
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    """The Anthropic API key, used when neither ``CORRAL_MODEL_*`` variable is set."""

    nats: NatsSettings = Field(default_factory=NatsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: HarnessMetricsSettings = Field(default_factory=HarnessMetricsSettings)

    @field_validator("crashpoint")
    @classmethod
    def _known_crashpoint(cls, value: str | None) -> str | None:
        if value is not None and value not in CRASHPOINTS:
            raise ValueError(f"unknown crashpoint {value!r}; expected one of {', '.join(sorted(CRASHPOINTS))}")
        return value

    @field_validator("model_prices")
    @classmethod
    def _a_price_table(cls, value: str | None) -> str | None:
        load_prices(value)  # raises PriceTableError (a ValueError) saying what is wrong
        return value

    @model_validator(mode="after")
    def _a_model_is_configured(self) -> Settings:
        if not (self.model_base_url or self.model_api_key or self.anthropic_api_key):
            raise ValueError(_NO_MODEL)
        return self


@dataclass(frozen=True)
class ModelEndpoint:
    """Where the model lives. ``base_url=None`` means the Anthropic API (``messagesclient.DEFAULT_BASE_URL``)."""

    base_url: str | None
    api_key: SecretStr

    def describe(self) -> str:
        """For logs: says where requests go, never what the key is."""
        return f"model server at {self.base_url}" if self.base_url else "Anthropic API"


def model_endpoint(settings: Settings) -> ModelEndpoint:
    """``CORRAL_MODEL_*`` when either is set, else ``ANTHROPIC_API_KEY`` against the real API."""
    if settings.model_base_url or settings.model_api_key:
        return ModelEndpoint(settings.model_base_url, settings.model_api_key or SecretStr(PLACEHOLDER_API_KEY))
    if settings.anthropic_api_key is None:  # the validator makes this unreachable
        raise ValueError(_NO_MODEL)
    return ModelEndpoint(None, settings.anthropic_api_key)
