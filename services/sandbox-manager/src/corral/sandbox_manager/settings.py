"""sandbox-manager settings: its own knobs (the sandbox limits and timings, the engine checks) under
``CORRAL_SANDBOX_*``, and the shared ``CORRAL_DOCKER_HOST``, ``CORRAL_NATS_*`` and ``CORRAL_LOG_*``."""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.contracts.egress import AllowedHost
from corral.contracts.sandbox import (
    DEFAULT_TOOL_TIMEOUT_MS,
    EXECUTE_REPLY_MARGIN_S,
    MAX_TOOL_TIMEOUT_MS,
)
from corral.sandbox_manager.channel import FRAME_FACTOR, FRAME_SLACK, REPLY_SLACK
from corral.settings import LogSettings, MetricsSettings, NatsSettings, host_id_of, host_id_or_machine, renamed

#: The smallest piece of text a reply line must be able to carry (see ``max_frame_bytes``).
MIN_PART_BYTES: Final = 16384


class SandboxSettings(BaseSettings):
    """What a sandbox container is and how the manager looks after it (``CORRAL_SANDBOX_<FIELD>``)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_SANDBOX_", frozen=True, extra="ignore")

    image: str = Field(
        default="corral-sandbox:latest",
        description="the sandbox image (python3 and bash in it); environments with packages run an image built from it",
    )
    scope: str = Field(
        default="default",
        pattern=r"^[a-zA-Z0-9_.-]+$",
        description="label value that separates this manager's containers from others' on a shared engine",
    )
    host_id: str = Field(
        default="",
        description="this sandbox host's name (the manager and the Docker engine it drives): calls for the sessions "
        "placed here are sent to corral.rpc.sandbox.host.<host_id>.<op>; one manager per host id. Letters, digits, "
        "'_' and '-': any other character becomes '-' (a Kubernetes node name can be given as it is). Empty: the "
        "machine's host name",
    )
    egress_host: str = Field(
        default="",
        description="the host id (CORRAL_CREDENTIAL_PROXY_HOST_ID) of the credential-proxy on this machine, the one "
        "whose egress sockets this host's Docker engine can mount: sessions' and builds' egress is opened by it "
        "alone (corral.rpc.egress.host.<egress_host>.<op>). Empty: any credential-proxy (the queue group), right "
        "only when every credential-proxy shares the sandboxes' machine. Made a host id like host_id",
    )
    capacity: int = Field(
        default=0,
        ge=0,
        description="most sessions this host takes new sandboxes for (advertised; placement skips a full host); "
        "0: no limit",
    )
    user: str = Field(
        default="1000:1000", pattern=r"^[0-9]+(:[0-9]+)?$", description="numeric uid:gid the tools run as (never root)"
    )
    memory: str = Field(default="1g", description="memory limit (tmpfs contents count against it)")
    cpus: float = Field(default=1.0, gt=0, description="CPU limit in cores")
    pids: int = Field(default=256, ge=16, description="most processes and threads a sandbox may hold")
    workspace_size: str = Field(default="512m", description="size of the /workspace tmpfs")
    tmp_size: str = Field(default="64m", description="size of the /tmp tmpfs")
    workspace_inodes: int = Field(
        default=262_144,
        ge=1024,
        description="most files and directories in /workspace (each costs the sandbox ~1 KiB of its memory); "
        "one more is refused with ENOSPC",
    )
    tmp_inodes: int = Field(default=16_384, ge=256, description="most files and directories in /tmp")
    pool_size: int = Field(default=2, ge=0, description="pre-started containers kept per environment configuration")
    pool_configs: int = Field(default=4, ge=1, description="most environment configurations that keep a warm pool")
    idle_s: float = Field(default=600.0, gt=0, description="a session's sandbox is removed after this long unused")
    reap_interval_s: float = Field(default=60.0, gt=0, description="how often orphaned containers are looked for")
    orphan_grace_s: float = Field(default=60.0, ge=0, description="a container this young is never reaped")
    output_limit: int = Field(
        default=8 * 2**20,
        ge=1000,
        le=64 * 2**20,
        description="bytes of one tool call's output kept whole (beyond it, the head and the tail are kept and the "
        "middle replaced by a note); a reply longer than one line travels in parts",
    )
    max_frame_bytes: int = Field(
        default=1 << 20,
        description="longest reply line the manager reads from a sandbox's exec agent; a longer one (or a line "
        "that is not a reply) ends the sandbox: the call gets a tool error, the next call a fresh container. "
        f"Longer replies come in parts of (max_frame_bytes - {FRAME_SLACK}) / {FRAME_FACTOR} bytes of text; at "
        f"least {FRAME_FACTOR} x {MIN_PART_BYTES} + {FRAME_SLACK}",
    )
    reply_assemblies: int = Field(
        default=4,
        ge=1,
        description="most replies in parts (tool outputs longer than one line) put together at once across all "
        "sandboxes, each holding up to output_limit bytes; a sandbox whose reply finds none free waits",
    )
    stderr_log_bytes: int = Field(
        default=2048,
        ge=0,
        description="bytes of a sandbox's stderr copied into the log per minute (in at most 4 records, with the "
        "session id and a count of the bytes dropped); the rest is read and dropped",
    )
    tool_timeout_ms: int = Field(default=DEFAULT_TOOL_TIMEOUT_MS, gt=0, description="tool timeout when none is given")
    tool_timeout_max_ms: int = Field(default=MAX_TOOL_TIMEOUT_MS, gt=0, description="longest tool timeout accepted")
    reply_grace_s: float = Field(
        default=10.0, gt=0, description="wait beyond a tool's timeout before the sandbox is declared unresponsive"
    )
    clone_timeout_s: float = Field(
        default=600.0, gt=0, description="longest a session repository's clone may take when its sandbox is provisioned"
    )
    start_timeout_s: float = Field(default=30.0, gt=0, description="create + start + first answer of a container")
    provision_wait_s: float = Field(
        default=20.0,
        gt=0,
        lt=EXECUTE_REPLY_MARGIN_S,
        description="how long a tool call waits for its session's sandbox (a cold start, an environment image "
        "build) before it is answered 'not ready, call again' without running: below the caller's reply margin, "
        "so a call is never run after its caller gave up on it",
    )
    environment_builds: Literal["off", "on"] = Field(
        default="on",
        description="whether environment images are built from the packages an environment lists: 'on' builds "
        "them in a container with no network but the build's egress proxy (the package registries only; needs "
        "the credential-proxy with CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR); 'off' answers an environment with "
        "packages whose image is not on the engine with a tool error saying so",
    )
    environment_build_hosts: list[AllowedHost] = Field(
        default_factory=list,
        description="hosts environment image builds may reach besides the public package registries (a private "
        'mirror, a registry the credential-proxy\'s list lacks), as JSON: ["mirror.example.com"]; each is '
        "still reached only at a public address, through the build's egress proxy",
    )
    environment_build_memory: str = Field(
        default="2g", description="memory limit of an environment image's build container (no swap beyond it)"
    )
    environment_build_cpus: float = Field(default=2.0, gt=0, description="CPU limit of a build container, in cores")
    environment_build_pids: int = Field(
        default=1024, ge=64, description="most processes and threads a build container may hold"
    )
    environment_build_timeout_s: float = Field(
        default=900.0, gt=0, description="longest build of an environment image (the packages an environment lists)"
    )
    environment_build_retry_s: float = Field(
        default=120.0,
        ge=0,
        description="a failed environment image build is answered from memory for this long before it is tried again",
    )
    environment_ca_file: str = Field(
        default="",
        description="PEM file of CA certificates environment image builds trust besides the base image's (for a "
        "TLS-intercepting proxy in front of the package registries), added to the image's trust store; "
        "empty: none",
    )
    result_ttl_s: float = Field(default=7 * 86400.0, gt=0, description="how long tool outcomes stay recorded")
    record_ttl_s: float = Field(default=30 * 86400.0, gt=0, description="how long session-to-container records last")

    @property
    def part_bytes(self) -> int:
        """Bytes of text one line of a reply in parts carries (its line, escaped, fits ``max_frame_bytes``)."""
        return (self.max_frame_bytes - FRAME_SLACK) // FRAME_FACTOR

    @property
    def max_reply_bytes(self) -> int:
        """Longest reply text the manager puts together (the output limit and the agent's notes)."""
        return self.output_limit + REPLY_SLACK

    @model_validator(mode="after")
    def _frame_fits_a_part(self) -> SandboxSettings:
        smallest = FRAME_FACTOR * MIN_PART_BYTES + FRAME_SLACK
        if self.max_frame_bytes < smallest:
            raise ValueError(
                f"max_frame_bytes {self.max_frame_bytes} is too small: a reply line must carry at least "
                f"{MIN_PART_BYTES} bytes of output (escaped, {smallest} bytes); set CORRAL_SANDBOX_MAX_FRAME_BYTES "
                f"to at least {smallest}"
            )
        return self

    @field_validator("environment_builds", mode="before")
    @classmethod
    def _no_host_network(cls, value: object) -> object:
        if value == "host-network":
            raise ValueError(
                "'host-network' builds are gone: builds now run with no network but their egress proxy; "
                "set CORRAL_SANDBOX_ENVIRONMENT_BUILDS=on (the default) or off"
            )
        return value

    @field_validator("environment_ca_file")
    @classmethod
    def _ca_file_exists(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"{value} is not a file; name a PEM file of CA certificates, or leave it empty")
        return value

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        return host_id_or_machine(value)

    @field_validator("egress_host")
    @classmethod
    def _egress_host(cls, value: str) -> str:
        return host_id_of(value) if value else value

    @field_validator("user")
    @classmethod
    def _not_root(cls, value: str) -> str:
        uid, _, gid = value.partition(":")
        if int(uid) == 0 or (gid and int(gid) == 0):
            raise ValueError("sandboxes never run as root (uid or gid 0)")
        return value


class SandboxManagerMetricsSettings(MetricsSettings):
    """Its metrics endpoint: ``CORRAL_SANDBOX_METRICS_PORT`` and ``CORRAL_SANDBOX_METRICS_HOST``."""

    model_config = SettingsConfigDict(
        env_prefix="CORRAL_SANDBOX_METRICS_", frozen=True, extra="ignore", env_ignore_empty=True
    )


class Settings(BaseSettings):
    """The sandbox-manager's own knobs are all ``CORRAL_SANDBOX_*`` (its prefix: it is the one service that
    owns sandboxes); the Docker engine, the bus and logging are the shared ``CORRAL_DOCKER_*``,
    ``CORRAL_NATS_*`` and ``CORRAL_LOG_*``."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_SANDBOX_", frozen=True, extra="ignore", populate_by_name=True)

    docker_host: str | None = Field(
        default=None,
        validation_alias="CORRAL_DOCKER_HOST",
        description="Docker engine address; unset = the docker SDK's default (DOCKER_HOST, else the local socket)",
    )
    health_probe_timeout_s: float = Field(
        default=2.0,
        gt=0,
        validation_alias=renamed("CORRAL_SANDBOX_HEALTH_PROBE_TIMEOUT_S", "CORRAL_HEALTH_PROBE_TIMEOUT_S"),
        description="deadline of each dependency check behind a health answer",
    )
    engine_retry_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias=renamed("CORRAL_SANDBOX_ENGINE_RETRY_S", "CORRAL_ENGINE_RETRY_S"),
        description="how often a missing engine or image is looked for",
    )
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: SandboxManagerMetricsSettings = Field(default_factory=SandboxManagerMetricsSettings)
