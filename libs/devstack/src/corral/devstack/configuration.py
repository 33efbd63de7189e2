"""The launcher's configuration: every variable ``corral-dev`` and ``Stack`` read, read here and only here.

``StackConfig.read`` turns the environment (and the command line's overrides) into typed values once;
the components are given those values, never the environment. The one other thing read from the
environment is what the processes the launcher starts inherit (``process_environment``: ``PATH``,
``HOME``...), which is also only read here.

Pure: nothing here starts, stops or probes anything (the one file it looks at is this host's CA
bundle, a default).
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.devstack.errors import DevstackError
from corral.devstack.ports import HARNESSES_MAX, HOST, NATS_NODES_MAX, PORT_SETTINGS, Ports
from corral.devstack.replicas import Replicas
from corral.devstack.state import DEFAULT_STATE_DIR

log = logging.getLogger("corral.devstack")

#: What the sandbox-manager's environment image builds trust besides the sandbox image's CAs.
ENVIRONMENT_CA_VAR = "CORRAL_SANDBOX_ENVIRONMENT_CA_FILE"

#: The Postgres to use instead of the embedded one (also what the session-store reads).
POSTGRES_URL_VAR = "CORRAL_POSTGRES_URL"
#: Its name before the one naming scheme: still read for one release, with a warning.
OLD_POSTGRES_URL_VAR = "DATABASE_URL"

SYNC_INTERVAL_VAR = "CORRAL_NATS_SYNC_INTERVAL"
#: fsync after every write: an acknowledged append survives a power loss or a kernel crash, at the
#: cost of one fsync per stored message. NATS's own default, ``2m``, survives a crash of nats-server
#: (the kernel still has the data) but can lose up to two minutes of acknowledged writes when the
#: machine goes down.
DEFAULT_SYNC_INTERVAL = "always"
_SYNC_INTERVAL = re.compile(r"^(always|[1-9][0-9]*(ms|s|m|h))$")

CLUSTER_VAR = "CORRAL_NATS_CLUSTER"
#: Cluster sizes ``up`` runs: one server, or an odd number (a JetStream cluster needs a majority of its
#: nodes up, so a fourth node adds no tolerance over three).
CLUSTER_SIZES = tuple(n for n in range(1, NATS_NODES_MAX + 1) if n % 2 == 1)
#: The services' ``NatsSettings.replicas``, which the launcher checks against the cluster's size.
REPLICAS_VAR = "CORRAL_NATS_REPLICAS"

EMBEDDED_MODEL_API_KEY = "embedded"

DEFAULT_MIRROR = "http://deb.debian.org/debian"
BUILD_MODES = ("auto", "dockerfile", "debootstrap")
DEFAULT_BUILD_TIMEOUT = 900.0

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def process_environment() -> dict[str, str]:
    """A copy of the launcher's own environment: what the processes it starts inherit (``PATH``,
    ``HOME``...; each component takes out what it must not see)."""
    return dict(os.environ)


def host_ca_bundle() -> str | None:
    """This host's CA bundle, the one Python verifies TLS against by default (``SSL_CERT_FILE``, else
    OpenSSL's, e.g. ``/etc/ssl/certs/ca-certificates.crt``), if it has one."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _int_env(environ: Mapping[str, str], var: str, default: int) -> int:
    raw = environ.get(var, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise DevstackError(f"{var}={raw!r} is not an integer") from None


def sync_interval(raw: str | None) -> str:
    """``CORRAL_NATS_SYNC_INTERVAL``: ``always`` or a duration like ``500ms``, ``10s``, ``2m``."""
    value = (raw or "").strip() or DEFAULT_SYNC_INTERVAL
    if not _SYNC_INTERVAL.match(value):
        raise DevstackError(f"{SYNC_INTERVAL_VAR}={value!r} is not 'always' or a duration such as 500ms, 10s or 2m")
    return value


def nats_cluster_size(raw: str | None) -> int:
    """``CORRAL_NATS_CLUSTER``: how many NATS servers ``up`` runs as one JetStream cluster (1: a single
    server, no cluster)."""
    value = (raw or "").strip() or "1"
    if not value.isdigit() or int(value) not in CLUSTER_SIZES:
        sizes = ", ".join(map(str, CLUSTER_SIZES))
        raise DevstackError(
            f"{CLUSTER_VAR}={value!r} is not one of {sizes} (a cluster needs a majority of its servers up, "
            "so it has an odd number of them)"
        )
    return int(value)


def nats_replicas(raw: str | None, cluster_size: int) -> int:
    """``CORRAL_NATS_REPLICAS``: copies of each stream and bucket; by default 3 on a cluster of 3 or
    more servers (every acknowledged write is on a majority of them), else 1. More than the cluster
    has servers could never be placed: refused here, before anything starts."""
    value = (raw or "").strip()
    if not value:
        return min(3, cluster_size)
    if not value.isdigit() or not 1 <= int(value) <= cluster_size:
        raise DevstackError(
            f"{REPLICAS_VAR}={value!r} is not between 1 and the number of NATS servers, {cluster_size} "
            f"({CLUSTER_VAR}); run more servers or ask for fewer replicas"
        )
    return int(value)


def read_ports(environ: Mapping[str, str]) -> Ports:
    """The ``CORRAL_*_PORT`` variables; unset ones keep their defaults.

    ``CORRAL_OPENBAO_CLUSTER_PORT`` defaults to ``CORRAL_OPENBAO_PORT + 1``. A variable's former
    name (``CORRAL_BAO_PORT``...) is still read when the new one is unset, with a warning.
    """
    values: dict[str, int] = {}
    for setting in PORT_SETTINGS:
        name = setting.env_var
        raw = environ.get(name, "").strip()
        if not raw and setting.old_env_var and environ.get(setting.old_env_var, "").strip():
            name = setting.old_env_var
            raw = environ[name].strip()
            log.warning("%s is deprecated and will be removed in the next release; set %s", name, setting.env_var)
        if not raw:
            continue
        try:
            port = int(raw)
        except ValueError:
            raise DevstackError(f"{name}={raw!r} is not a port number") from None
        if not 0 < port < 65536:
            raise DevstackError(f"{name}={port} is not between 1 and 65535")
        values[setting.field] = port
    if "bao" in values and "bao_cluster" not in values:
        values["bao_cluster"] = values["bao"] + 1
    return Ports(**values)


def state_dir(environ: Mapping[str, str]) -> Path:
    """``CORRAL_STATE_DIR``, else ``.corral``."""
    return Path(environ.get("CORRAL_STATE_DIR") or DEFAULT_STATE_DIR)


def up_timeout(environ: Mapping[str, str], default: float) -> float:
    """``CORRAL_UP_TIMEOUT``: seconds ``up`` waits for health."""
    raw = environ.get("CORRAL_UP_TIMEOUT", "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise DevstackError(f"CORRAL_UP_TIMEOUT={raw!r} is not a number of seconds") from None


def docker_wanted(environ: Mapping[str, str]) -> bool | None:
    """``CORRAL_DOCKER``: whether ``up`` runs a Docker engine and the sandbox image (None: unset)."""
    raw = environ.get("CORRAL_DOCKER", "").strip().lower()
    if not raw:
        return None
    if raw not in (*_TRUE, *_FALSE):
        raise DevstackError(f"CORRAL_DOCKER={raw!r} is not 0 or 1")
    return raw in _TRUE


@dataclass(frozen=True)
class ModelConfig:
    """Which model the harnesses call.

    - ``CORRAL_MODEL_BASE_URL`` set: that server (with ``CORRAL_MODEL_API_KEY`` if set);
    - else a real Anthropic key (``sk-ant-...``) in ``CORRAL_MODEL_API_KEY`` or
      ``ANTHROPIC_API_KEY``: the Anthropic API, no base URL;
    - else the embedded model on ``127.0.0.1:<CORRAL_EMBEDDED_MODEL_PORT>``.

    ``ANTHROPIC_API_KEY=sk-corral-dev-...`` (from a sourced ``.corral/env``) is not a real key
    and falls through to the embedded model.
    """

    embedded: bool
    base_url: str | None
    api_key: str | None

    def describe(self) -> str:
        if self.embedded:
            return f"embedded model at {self.base_url}"
        if self.base_url:
            return f"model server at {self.base_url}"
        return "Anthropic API (real key)"


def read_model(environ: Mapping[str, str], embedded_model_port: int) -> ModelConfig:
    """The model choice (see ``ModelConfig``) from ``CORRAL_MODEL_*`` and ``ANTHROPIC_API_KEY``."""
    base_url = environ.get("CORRAL_MODEL_BASE_URL", "").strip()
    if base_url:
        return ModelConfig(False, base_url, environ.get("CORRAL_MODEL_API_KEY") or None)
    for var in ("CORRAL_MODEL_API_KEY", "ANTHROPIC_API_KEY"):
        key = environ.get(var, "").strip()
        if key.startswith("sk-ant-"):
            return ModelConfig(False, None, key)
    return ModelConfig(True, f"http://{HOST}:{embedded_model_port}", EMBEDDED_MODEL_API_KEY)


def default_image_dir() -> Path:
    """``infra/sandbox-image`` of the repository this package is installed from (editable)."""
    return Path(__file__).resolve().parents[5] / "infra" / "sandbox-image"


@dataclass(frozen=True)
class ImageSettings:
    """Where the sandbox image comes from (see ``corral.devstack.sandbox_image`` for the variables):
    ``CORRAL_SANDBOX_IMAGE_DIR``, ``CORRAL_SANDBOX_IMAGE``, ``CORRAL_SANDBOX_BUILD``,
    ``CORRAL_SANDBOX_BASE``, ``CORRAL_DEBIAN_MIRROR``, ``CORRAL_SANDBOX_BUILD_TIMEOUT``."""

    directory: Path
    explicit: str | None = None
    mode: str = "auto"
    base: str | None = None
    mirror: str = DEFAULT_MIRROR
    timeout: float = DEFAULT_BUILD_TIMEOUT


def read_image_settings(environ: Mapping[str, str]) -> ImageSettings:
    mode = (environ.get("CORRAL_SANDBOX_BUILD") or "auto").strip().lower()
    if mode not in BUILD_MODES:
        raise DevstackError(f"CORRAL_SANDBOX_BUILD={mode!r} is not one of {', '.join(BUILD_MODES)}")
    raw_timeout = (environ.get("CORRAL_SANDBOX_BUILD_TIMEOUT") or "").strip()
    try:
        timeout = float(raw_timeout) if raw_timeout else DEFAULT_BUILD_TIMEOUT
    except ValueError:
        raise DevstackError(f"CORRAL_SANDBOX_BUILD_TIMEOUT={raw_timeout!r} is not a number") from None
    directory = environ.get("CORRAL_SANDBOX_IMAGE_DIR")
    return ImageSettings(
        directory=Path(directory).absolute() if directory else default_image_dir(),
        explicit=(environ.get("CORRAL_SANDBOX_IMAGE") or "").strip() or None,
        mode=mode,
        base=(environ.get("CORRAL_SANDBOX_BASE") or "").strip() or None,
        mirror=(environ.get("CORRAL_DEBIAN_MIRROR") or "").strip() or DEFAULT_MIRROR,
        timeout=timeout,
    )


def external_postgres_url(environ: Mapping[str, str]) -> str | None:
    """``CORRAL_POSTGRES_URL``, else the deprecated ``DATABASE_URL`` (with a warning)."""
    url = environ.get(POSTGRES_URL_VAR, "").strip()
    if url:
        return url
    old = environ.get(OLD_POSTGRES_URL_VAR, "").strip()
    if old:
        log.warning(
            "%s is deprecated and will stop working in the next release; set %s instead",
            OLD_POSTGRES_URL_VAR,
            POSTGRES_URL_VAR,
        )
        return old
    return None


#: Harness processes when neither ``--harness-count`` nor ``CORRAL_HARNESS_COUNT`` says: one serves
#: any number of sessions; a takeover demo or test asks for two.
DEFAULT_HARNESS_COUNT = 1


@dataclass(frozen=True)
class StackConfig:
    """The settings of one stack (see ``Stack`` for where each comes from)."""

    #: The environment the services inherit (less what each must not see: ``services._NOT_INHERITED``).
    environ: Mapping[str, str]
    harness_count: int
    services_enabled: bool
    docker_enabled: bool
    log_level: str
    external_database_url: str | None
    external_docker_host: str | None
    #: ``CORRAL_DOCKER_DATA_ROOT`` (None: the state directory's ``data/docker``).
    docker_data_root: Path | None
    #: ``OTEL_EXPORTER_OTLP_ENDPOINT``, passed on to every service.
    otel_endpoint: str | None
    #: ``CORRAL_TRACING=1``: run the trace collector, and have every service export to it.
    tracing: bool = False
    #: ``CORRAL_JAEGER_OTLP``: the OTLP/HTTP endpoint the collector forwards every export to.
    jaeger_otlp: str | None = None
    #: ``CORRAL_GATEWAY_COUNT``, ``CORRAL_SESSION_STORE_COUNT``, ``CORRAL_CREDENTIAL_PROXY_COUNT``,
    #: ``CORRAL_SANDBOX_HOSTS`` (see ``corral.devstack.replicas``).
    replicas: Replicas = field(default_factory=lambda: Replicas({}))

    @classmethod
    def read(
        cls,
        *,
        environ: Mapping[str, str] | None,
        harness_count: int | None,
        services: bool,
        docker: bool,
        log_level: str | None,
    ) -> StackConfig:
        env: dict[str, str] = process_environment() if environ is None else dict(environ)
        count = (
            harness_count if harness_count is not None else _int_env(env, "CORRAL_HARNESS_COUNT", DEFAULT_HARNESS_COUNT)
        )
        if not 1 <= count <= HARNESSES_MAX:
            raise DevstackError(f"CORRAL_HARNESS_COUNT must be from 1 to {HARNESSES_MAX} (got {count})")
        data_root = env.get("CORRAL_DOCKER_DATA_ROOT", "").strip()
        return cls(
            environ=env,
            harness_count=count,
            services_enabled=services,
            docker_enabled=docker,
            log_level=log_level or env.get("CORRAL_LOG_LEVEL") or "INFO",
            external_database_url=external_postgres_url(env),
            external_docker_host=env.get("CORRAL_DOCKER_HOST") or None,
            docker_data_root=Path(data_root) if data_root else None,
            otel_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            tracing=env.get("CORRAL_TRACING", "").strip().lower() in ("1", "true", "yes", "on"),
            jaeger_otlp=env.get("CORRAL_JAEGER_OTLP", "").strip() or None,
            replicas=Replicas.read(env),
        )

    @property
    def ports(self) -> Ports:
        """The ports from ``CORRAL_*_PORT`` (a caller may give ``Stack`` others)."""
        return read_ports(self.environ)

    def model(self, embedded_model_port: int) -> ModelConfig:
        return read_model(self.environ, embedded_model_port)

    @property
    def nats_sync_interval(self) -> str:
        return sync_interval(self.environ.get(SYNC_INTERVAL_VAR))

    @property
    def nats_cluster_size(self) -> int:
        return nats_cluster_size(self.environ.get(CLUSTER_VAR))

    @property
    def nats_replicas(self) -> int:
        return nats_replicas(self.environ.get(REPLICAS_VAR), self.nats_cluster_size)

    @property
    def image_settings(self) -> ImageSettings:
        return read_image_settings(self.environ)

    @property
    def environment_ca_file(self) -> str:
        """The CA certificates the sandbox-manager's environment image builds trust
        (``CORRAL_SANDBOX_ENVIRONMENT_CA_FILE``): as set (empty: none), else this host's CA bundle.

        A dev stack's builds reach the package registries from this machine (through the
        credential-proxy), so they trust what this machine trusts: behind a TLS-intercepting proxy,
        that is the proxy's CA, without which pip and npm fail certificate verification.
        """
        if ENVIRONMENT_CA_VAR in self.environ:
            return self.environ[ENVIRONMENT_CA_VAR].strip()
        return host_ca_bundle() or ""

    @property
    def sandbox_image_override(self) -> str | None:
        """``CORRAL_SANDBOX_IMAGE``: the image to use instead of building one."""
        return self.environ.get("CORRAL_SANDBOX_IMAGE") or None
