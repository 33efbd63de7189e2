"""credential-proxy settings (env prefix ``CORRAL_``). Only this service ever gets an OpenBao credential.

OpenBao is configured under ``CORRAL_OPENBAO_*`` (``OpenBaoSettings``): its address and either an
AppRole login (``ROLE_ID`` + ``SECRET_ID``, what ``make up`` gives) or a fixed ``TOKEN``.

Its own knobs are ``CORRAL_CREDENTIAL_PROXY_*``: the egress proxies under
``CORRAL_CREDENTIAL_PROXY_EGRESS_*`` (``EgressSettings``; without ``CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR``
this deployment serves no egress), the git proxy for session repositories under
``CORRAL_CREDENTIAL_PROXY_GIT_*`` (``GitSettings``), the MCP client under
``CORRAL_CREDENTIAL_PROXY_MCP_*`` (``McpSettings``) and the destinations it may reach despite the
address rules, ``CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS`` (``DestinationSettings``). The egress
knobs' old names, ``CORRAL_EGRESS_*``, still work for one release, with a deprecation warning.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from corral.credential_proxy.mcp_destinations import Admitted, BadDestinationEntry, parse_destinations
from corral.settings import LogSettings, MetricsSettings, NatsSettings, host_id_or_machine, renamed

EGRESS_PREFIX = "CORRAL_CREDENTIAL_PROXY_EGRESS_"


def _egress(field: str) -> AliasChoices:
    """``CORRAL_CREDENTIAL_PROXY_EGRESS_<FIELD>``, else (deprecated) ``CORRAL_EGRESS_<FIELD>``."""
    return renamed(f"{EGRESS_PREFIX}{field.upper()}", f"CORRAL_EGRESS_{field.upper()}")


def addresses_as_networks(value: object) -> object:
    """A JSON list of addresses and networks as ``ip_network``s (IPv4-mapped forms refused)."""
    if not isinstance(value, list | tuple):
        return value
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in value:
        try:
            network = ipaddress.ip_network(entry)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"allow_addresses: {entry!r} is not an IP address or network ({exc}); write e.g. "
                '"203.0.113.80" or "198.51.100.0/24" (no host bits set after the prefix)'
            ) from None
        if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
            raise ValueError(f"allow_addresses: write {entry!r} in its IPv4 form")
        networks.append(network)
    return tuple(networks)


class EgressSettings(BaseSettings):
    """The per-session egress proxies (``CORRAL_CREDENTIAL_PROXY_EGRESS_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix=EGRESS_PREFIX, frozen=True, extra="ignore", populate_by_name=True)

    socket_dir: Path | None = Field(
        validation_alias=_egress("socket_dir"),
        default=None,
        description="directory (created 0755 if missing) holding one <session_id>/proxy.sock per session, which the "
        "sandbox-manager mounts into that session's sandbox; unset: no egress is served (open says so)",
    )
    ports: tuple[int, ...] = Field(
        validation_alias=_egress("ports"),
        default=(80, 443),
        min_length=1,
        description="destination ports a sandbox may reach, as JSON (CORRAL_CREDENTIAL_PROXY_EGRESS_PORTS='[80,443]')",
    )
    allow_addresses: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = Field(
        validation_alias=_egress("allow_addresses"),
        default=(),
        description="addresses and networks sandboxes may reach although the address rules refuse them (this "
        "machine's own addresses, loopback, private, documentation ranges...), as JSON "
        '(CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES=\'["203.0.113.80", "198.51.100.0/24"]\'); '
        "a session's allowed hosts still apply. Empty: none",
    )
    connect_timeout_s: float = Field(
        validation_alias=_egress("connect_timeout_s"),
        default=10.0,
        gt=0,
        description="longest wait for a destination's DNS answer, and for each connection attempt",
    )
    idle_timeout_s: float = Field(
        validation_alias=_egress("idle_timeout_s"),
        default=300.0,
        gt=0,
        description="a connection with no bytes moving either way for this long is closed",
    )
    head_timeout_s: float = Field(
        validation_alias=_egress("head_timeout_s"),
        default=30.0,
        gt=0,
        description="longest wait for a client's request line and headers",
    )
    max_head_bytes: int = Field(
        validation_alias=_egress("max_head_bytes"),
        default=65536,
        ge=4096,
        description="largest request line and headers accepted (larger: 431)",
    )
    max_connections: int = Field(
        validation_alias=_egress("max_connections"),
        default=64,
        ge=1,
        description="most connections one session's proxy carries at once (more: 503)",
    )
    grant_ttl_s: float = Field(
        validation_alias=_egress("grant_ttl_s"),
        default=30 * 86400.0,
        gt=0,
        description="a grant not re-opened for this long is forgotten (its session's sandbox is long gone)",
    )
    state_dir: Path | None = Field(
        default=None,
        description="directory (created 0700) where each session's interception CA and placeholder seed are kept "
        "(one 0600 file per session), so a restarted credential-proxy goes on with the CA its running sandboxes "
        "trust; unset: kept in memory only (after a restart, intercepted hosts fail TLS in running sandboxes)",
    )
    upstream_ca_file: Path | None = Field(
        default=None,
        description="PEM file of CAs trusted, besides the system's, when the proxy verifies an intercepted host "
        "(credentials at egress); unset: the system's CAs only",
    )
    max_injected_body_bytes: int = Field(
        default=1 << 20,
        ge=0,
        description="largest request body searched for placeholders (credentials with injection_location.body); "
        "a larger body is sent as it is",
    )

    @field_validator("socket_dir", "state_dir", "upstream_ca_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("socket_dir")
    @classmethod
    def _absolute(cls, socket_dir: Path | None) -> Path | None:
        # the directories handed to the sandbox-manager must be absolute paths on this host
        return None if socket_dir is None else socket_dir.absolute()

    @field_validator("allow_addresses", mode="before")
    @classmethod
    def _addresses_as_networks(cls, value: object) -> object:
        return addresses_as_networks(value)

    @field_validator("ports")
    @classmethod
    def _valid_ports(cls, ports: tuple[int, ...]) -> tuple[int, ...]:
        bad = [p for p in ports if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"ports must be 1-65535, got {bad}")
        return ports


GIT_PREFIX = "CORRAL_CREDENTIAL_PROXY_GIT_"


class GitSettings(BaseSettings):
    """The git smart-HTTP proxy for session repositories (``CORRAL_CREDENTIAL_PROXY_GIT_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix=GIT_PREFIX, frozen=True, extra="ignore", populate_by_name=True)

    hosts: tuple[str, ...] = Field(
        default=("github.com",),
        description="hosts repositories may be cloned from and pushed to, as JSON: a name, or name:port for a "
        "port other than the scheme's (CORRAL_CREDENTIAL_PROXY_GIT_HOSTS='[\"github.com\", "
        '"git.example.com:8443"]\'); GitHub Enterprise or any git smart-HTTP server. Addresses they resolve '
        "to must still pass the egress address rules (CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES admits "
        "private ones)",
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA certificates repository hosts are verified with (a GitHub Enterprise "
        "server's private CA); unset: the system's",
    )
    allow_addresses: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = Field(
        default=(),
        description="addresses and networks repository hosts may resolve to although the egress address rules "
        "refuse them (a GitHub Enterprise server on a private network, a test's git server on loopback), as JSON "
        "(CORRAL_CREDENTIAL_PROXY_GIT_ALLOW_ADDRESSES='[\"10.0.8.20\"]'); only the git proxy's connections to "
        "the hosts in CORRAL_CREDENTIAL_PROXY_GIT_HOSTS use it, never a sandbox's own egress",
    )
    timeout_s: float = Field(
        default=30.0, gt=0, description="longest wait for a repository host's answer to a check or a request's head"
    )

    @field_validator("allow_addresses", mode="before")
    @classmethod
    def _addresses_as_networks(cls, value: object) -> object:
        return addresses_as_networks(value)

    @field_validator("ca_file", mode="before")
    @classmethod
    def _empty_ca_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("hosts")
    @classmethod
    def _lower_hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = []
        for entry in hosts:
            host, colon, port = entry.strip().lower().rpartition(":")
            if not colon:
                host, port = port, ""
            if not host or "/" in entry or "@" in entry or (port and not (port.isdigit() and 0 < int(port) < 65536)):
                raise ValueError(f"hosts: {entry!r} is not a host name or host:port (e.g. github.com)")
            cleaned.append(f"{host}:{port}" if port else host)
        return tuple(cleaned)


class McpSettings(BaseSettings):
    """The MCP client (``CORRAL_CREDENTIAL_PROXY_MCP_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_CREDENTIAL_PROXY_MCP_", frozen=True, extra="ignore")

    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="longest wait for an MCP server's DNS answer, connection and MCP handshake"
    )
    list_timeout_s: float = Field(default=30.0, gt=0, description="longest wait for an MCP server's tool list")
    call_timeout_s: float = Field(
        default=120.0, gt=0, description="longest an MCP tool call may take before it is abandoned (an error result)"
    )
    idle_timeout_s: float = Field(
        default=300.0, gt=0, description="a session's MCP connection unused for this long is closed"
    )


class DestinationSettings(BaseSettings):
    """Destinations the operator admits (``CORRAL_CREDENTIAL_PROXY_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_CREDENTIAL_PROXY_", frozen=True, extra="ignore")

    allow_destinations: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="MCP servers the credential-proxy may reach although the address rules refuse them (loopback, "
        "private, this machine's...), comma-separated host:port (CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS="
        "'mcp.internal:8080,10.0.0.5:443'). Empty: none",
    )

    @field_validator("allow_destinations", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            try:
                parse_destinations(str(entry) for entry in value)
            except BadDestinationEntry as exc:
                raise ValueError(f"allow_destinations: {exc}") from None
        return value

    @property
    def admitted(self) -> Admitted:
        return parse_destinations(self.allow_destinations)


class WebSettings(BaseSettings):
    """The web tools this service runs for the harness (``CORRAL_CREDENTIAL_PROXY_<FIELD>``): ``web_fetch``
    under the egress destination rules above, ``web_search`` through the operator's search backend."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_CREDENTIAL_PROXY_", frozen=True, extra="ignore")

    search_url: str | None = Field(
        default=None,
        description="base URL of a SearXNG instance (its JSON API, /search?format=json, enabled) that web_search "
        "asks; unset: web_search answers that no search backend is configured",
    )
    search_timeout_s: float = Field(default=10.0, gt=0, description="longest wait for the search backend's answer")
    search_max_results: int = Field(default=10, ge=1, le=50, description="most results web_search returns")
    web_fetch_timeout_s: float = Field(
        default=30.0, gt=0, description="longest a web_fetch may take, redirects and reading the body included"
    )
    web_fetch_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="most bytes of a response body web_fetch reads (the rest is dropped, with a note)",
    )
    web_fetch_max_redirects: int = Field(default=5, ge=0, le=20, description="most redirects web_fetch follows")

    @field_validator("search_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("search_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"search_url must be an http:// or https:// URL, got {value!r}")
        return value


class OpenBaoSettings(BaseSettings):
    """Where OpenBao is and how this service logs in (``CORRAL_OPENBAO_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_OPENBAO_", frozen=True, extra="ignore", populate_by_name=True)

    addr: str = Field(
        default="http://127.0.0.1:8200",
        validation_alias=renamed("CORRAL_OPENBAO_ADDR", "CORRAL_VAULT_ADDR"),
        description="the OpenBao (or Vault) server",
    )
    role_id: str | None = Field(
        default=None,
        description="role id of this service's AppRole; with CORRAL_OPENBAO_SECRET_ID it logs in, renews its "
        "token and logs in again when renewal fails",
    )
    secret_id: SecretStr | None = Field(default=None, description="the AppRole secret id that goes with it")
    approle_mount: str = Field(default="approle", min_length=1, description="where the AppRole auth method is mounted")
    token: SecretStr | None = Field(
        default=None,
        validation_alias=renamed("CORRAL_OPENBAO_TOKEN", "CORRAL_VAULT_TOKEN"),
        description="a fixed token instead of an AppRole login, used as is and never renewed",
    )

    @field_validator("role_id", "secret_id", "token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_login(self) -> OpenBaoSettings:
        if (self.role_id is None) != (self.secret_id is None):
            raise ValueError(
                "set both CORRAL_OPENBAO_ROLE_ID and CORRAL_OPENBAO_SECRET_ID for an AppRole login, or neither"
            )
        if self.role_id is not None and self.token is not None:
            raise ValueError("set either an AppRole login (CORRAL_OPENBAO_ROLE_ID) or CORRAL_OPENBAO_TOKEN, not both")
        return self


class CredentialProxyMetricsSettings(MetricsSettings):
    """Its metrics endpoint: ``CORRAL_CREDENTIAL_PROXY_METRICS_PORT`` and ``CORRAL_CREDENTIAL_PROXY_METRICS_HOST``."""

    model_config = SettingsConfigDict(
        env_prefix="CORRAL_CREDENTIAL_PROXY_METRICS_", frozen=True, extra="ignore", env_ignore_empty=True
    )


class Settings(BaseSettings):
    """The credential-proxy's own knobs are ``CORRAL_CREDENTIAL_PROXY_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="CORRAL_CREDENTIAL_PROXY_", frozen=True, extra="ignore", populate_by_name=True
    )

    host_id: str = Field(
        default="",
        description="this machine's name on the bus: besides the queue group, its egress operations are served on "
        "corral.rpc.egress.host.<host_id>.<op>, which a sandbox-manager with CORRAL_SANDBOX_EGRESS_HOST=<host_id> "
        "asks. Letters, digits, '_' and '-': any other character becomes '-' (a Kubernetes node name can be "
        "given as it is). Empty: the machine's host name (what a sandbox-manager on it takes for "
        "CORRAL_SANDBOX_HOST_ID)",
    )
    openbao: OpenBaoSettings = Field(default_factory=OpenBaoSettings)
    secret_store_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="deadline of each OpenBao call that writes, reads or deletes a credential's secret, and of "
        "each session-store request a credential operation makes",
    )
    health_probe_timeout_s: float = Field(
        default=2.0,
        validation_alias=renamed("CORRAL_CREDENTIAL_PROXY_HEALTH_PROBE_TIMEOUT_S", "CORRAL_HEALTH_PROBE_TIMEOUT_S"),
        gt=0,
        description="deadline of each dependency check behind a health answer",
    )
    egress: EgressSettings = Field(default_factory=EgressSettings)
    git: GitSettings = Field(default_factory=GitSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    mcp: McpSettings = Field(default_factory=McpSettings)
    destinations: DestinationSettings = Field(default_factory=DestinationSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: CredentialProxyMetricsSettings = Field(default_factory=CredentialProxyMetricsSettings)

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        return host_id_or_machine(value)
