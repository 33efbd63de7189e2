"""The Corral services: which ones run, their environment, and waiting until they answer."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from corral.devstack import processes
from corral.devstack.components import Component, PortClaim
from corral.devstack.configuration import ModelConfig, process_environment
from corral.devstack.errors import ReadinessTimeoutError
from corral.devstack.nats_users import SERVICE_USERS
from corral.devstack.openbao import AppRoleLogin
from corral.devstack.ports import HOST
from corral.devstack.probes import http, http_status
from corral.devstack.replicas import REPLICAS_MAX, Replicas, gateway_port, host_id, split_name
from corral.devstack.state import StateDir

MODULES: dict[str, str] = {
    "embedded-model": "corral.embedded_model",
    "session-store": "corral.session_store",
    "gateway": "corral.gateway",
    "harness": "corral.harness",
    "sandbox-manager": "corral.sandbox_manager",
    "credential-proxy": "corral.credential_proxy",
}

BOOTSTRAP_WORKSPACE = "default"

#: Each service kind's metrics port variable (its settings' ``metrics`` fragment).
METRICS_PORT_VARIABLES: dict[str, str] = {
    "gateway": "CORRAL_GATEWAY_METRICS_PORT",
    "session-store": "CORRAL_SESSION_STORE_METRICS_PORT",
    "sandbox-manager": "CORRAL_SANDBOX_METRICS_PORT",
    "credential-proxy": "CORRAL_CREDENTIAL_PROXY_METRICS_PORT",
    "embedded-model": "CORRAL_EMBEDDED_MODEL_METRICS_PORT",
    "harness": "CORRAL_HARNESS_METRICS_PORT",
}
_METRICS_OFFSETS = {"gateway": 0, "session-store": 1, "sandbox-manager": 2, "credential-proxy": 3, "embedded-model": 4}
#: Replica ``n`` (2 and on) of the first four kinds: ``Ports.metrics`` plus this, ``4 * (n - 2)`` and its offset.
_REPLICA_METRICS_BASE = 16
#: Harness ``_LATER_HARNESSES`` and on: ``Ports.metrics`` plus this and ``N - _LATER_HARNESSES``
#: (after the replicas' ports, which the first eleven harnesses' end at).
_LATER_HARNESSES = 12
_LATER_HARNESSES_BASE = _REPLICA_METRICS_BASE + 4 * (REPLICAS_MAX - 1)

# Never inherited from the launcher's environment: each service gets exactly its own values
# (a sourced .corral/env must not make the harness call the gateway as its model, and only
# the credential-proxy may hold an OpenBao credential).
_NOT_INHERITED = frozenset(
    {
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_AUTH_TOKEN",
        "DATABASE_URL",
        "CORRAL_POSTGRES_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "CORRAL_DOCKER_HOST",
        "CORRAL_SANDBOX_IMAGE",
        "CORRAL_LOG_LEVEL",
        "CORRAL_NATS_URL",
        "CORRAL_NATS_USER",
        "CORRAL_NATS_PASSWORD",
        "CORRAL_HARNESS_WORKER_ID",
    }
)
_NOT_INHERITED_PREFIXES = (
    "CORRAL_MODEL_",
    "CORRAL_VAULT_",
    "CORRAL_OPENBAO_",
    "CORRAL_DATABASE_",
    "CORRAL_BOOTSTRAP_",
    "CORRAL_SESSION_STORE_BOOTSTRAP_",
    "VAULT_",
    "BAO_",
)


@dataclass(frozen=True)
class ServiceContext:
    """Everything the services' environment is made from."""

    nats_url: str
    database_url: str
    api_key: str
    gateway_port: int
    embedded_model_port: int
    openbao_addr: str
    #: the credential-proxy's AppRole login (None: OpenBao not initialised yet, no login given)
    openbao_login: AppRoleLogin | None
    model: ModelConfig
    #: NATS user -> password; each service connects as the user named for its kind.
    nats_passwords: Mapping[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    otel_endpoint: str | None = None
    docker_host: str | None = None
    #: the admin key (role ``admin``) the session-store registers at start (None: none)
    admin_api_key: str | None = None
    sandbox_image: str | None = None
    egress_socket_dir: str | None = None
    #: where the credential-proxy keeps each session's interception CA across its restarts
    egress_state_dir: str | None = None
    #: CA certificates environment image builds trust (``CORRAL_SANDBOX_ENVIRONMENT_CA_FILE``;
    #: ``""``: none, ``None``: not passed).
    environment_ca_file: str | None = None
    #: ``Ports.metrics``: the first of the services' metrics ports (None: no metrics endpoints)
    metrics_port: int | None = None
    #: ``CORRAL_NATS_REPLICAS``: copies of each stream and bucket (every service the same)
    nats_replicas: int = 1
    #: The Docker engine of each sandbox host, host 1 first (``sandbox-manager-n`` drives the n-th).
    sandbox_hosts: tuple[str, ...] = ()


def service_names(harness_count: int, embedded_model: bool, replicas: Replicas | None = None) -> list[str]:
    """Service names in start order (``replicas``: how many of each kind, one when None)."""
    count = replicas or Replicas({})
    names = ["embedded-model"] if embedded_model else []
    names += [*count.names("session-store"), *count.names("gateway")]
    names += [f"harness-{i}" for i in range(1, harness_count + 1)]
    names += [*count.names("sandbox-manager"), *count.names("credential-proxy")]
    return names


def kind_of(name: str) -> str:
    """``harness-2`` -> ``harness``, ``gateway-2`` -> ``gateway``; other names are their own kind."""
    kind = split_name(name)[0]
    return kind if kind in MODULES else name


def is_service_name(name: str) -> bool:
    kind, n = split_name(name)
    if kind == "harness":
        return name != kind
    return kind in MODULES and (kind != "embedded-model" or n == 1) and (name == kind or n > 1)


def metrics_port(first: int, name: str) -> int:
    """Service ``name``'s metrics port: ``first`` (``Ports.metrics``) plus the service's offset
    (gateway 0, session-store 1, sandbox-manager 2, credential-proxy 3, embedded-model 4, harness-N 4 + N
    up to harness-11; replica n >= 2 of the first four: 16 + 4 * (n - 2) + its kind's offset; harness-N
    from 12 on: 32 + N - 12), all within ``METRICS_BLOCK``."""
    kind, n = split_name(name)
    if kind == "harness" and n < _LATER_HARNESSES:
        return first + len(_METRICS_OFFSETS) - 1 + n
    if kind == "harness":
        return first + _LATER_HARNESSES_BASE + n - _LATER_HARNESSES
    if n > 1:
        return first + _REPLICA_METRICS_BASE + 4 * (n - 2) + _METRICS_OFFSETS[kind]
    return first + _METRICS_OFFSETS[name]


def inherited_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k not in _NOT_INHERITED and not k.startswith(_NOT_INHERITED_PREFIXES)}


def service_environment(
    name: str,
    ctx: ServiceContext,
    *,
    base: Mapping[str, str],
    extra: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """The full environment of service ``name``.

    ``extra`` adds per-service variables last, keyed by service name (``harness-1``) or kind
    (``harness``, applied to every harness; the exact name wins).
    """
    env = inherited_environment(base)
    env["PYTHONUNBUFFERED"] = "1"
    env["CORRAL_NATS_URL"] = ctx.nats_url
    env["CORRAL_NATS_REPLICAS"] = str(ctx.nats_replicas)
    env["CORRAL_LOG_LEVEL"] = ctx.log_level.upper()
    if ctx.otel_endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = ctx.otel_endpoint
    kind = kind_of(name)
    if ctx.metrics_port is not None:
        env[METRICS_PORT_VARIABLES[kind]] = str(metrics_port(ctx.metrics_port, name))
    if kind in SERVICE_USERS and kind in ctx.nats_passwords:
        env["CORRAL_NATS_USER"] = kind
        env["CORRAL_NATS_PASSWORD"] = ctx.nats_passwords[kind]
    if kind == "session-store":
        env["CORRAL_POSTGRES_URL"] = ctx.database_url
        env["CORRAL_SESSION_STORE_BOOTSTRAP_API_KEY"] = ctx.api_key
        if ctx.admin_api_key:
            env["CORRAL_SESSION_STORE_BOOTSTRAP_ADMIN_KEY"] = ctx.admin_api_key
        env["CORRAL_SESSION_STORE_BOOTSTRAP_WORKSPACE"] = BOOTSTRAP_WORKSPACE
        if ctx.nats_passwords:  # the server has the accounts, the subscribers' one among them
            env["CORRAL_SESSION_STORE_SUBSCRIBER_MIRRORS"] = "true"
    elif kind == "gateway":
        env["CORRAL_GATEWAY_HOST"] = HOST
        env["CORRAL_GATEWAY_PORT"] = str(gateway_port(ctx.gateway_port, name))
    elif kind == "harness":
        env["CORRAL_HARNESS_WORKER_ID"] = name
        if ctx.model.base_url:
            env["CORRAL_MODEL_BASE_URL"] = ctx.model.base_url
        if ctx.model.api_key:
            env["CORRAL_MODEL_API_KEY"] = ctx.model.api_key
    elif kind == "embedded-model":
        env["CORRAL_EMBEDDED_MODEL_HOST"] = HOST
        env["CORRAL_EMBEDDED_MODEL_PORT"] = str(ctx.embedded_model_port)
    elif kind == "credential-proxy":
        env["CORRAL_OPENBAO_ADDR"] = ctx.openbao_addr
        if ctx.openbao_login is not None:
            env["CORRAL_OPENBAO_ROLE_ID"] = ctx.openbao_login.role_id
            env["CORRAL_OPENBAO_SECRET_ID"] = ctx.openbao_login.secret_id
        if ctx.egress_socket_dir:
            env["CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR"] = ctx.egress_socket_dir
        if ctx.egress_state_dir:
            env["CORRAL_CREDENTIAL_PROXY_EGRESS_STATE_DIR"] = ctx.egress_state_dir
    elif kind == "sandbox-manager":
        n = split_name(name)[1]
        docker_host = ctx.sandbox_hosts[n - 1] if n <= len(ctx.sandbox_hosts) else ctx.docker_host
        if docker_host:
            env["CORRAL_DOCKER_HOST"] = docker_host
        if host_id(n) is not None:
            env["CORRAL_SANDBOX_HOST_ID"] = str(host_id(n))
        if ctx.sandbox_image:
            env["CORRAL_SANDBOX_IMAGE"] = ctx.sandbox_image
        if ctx.environment_ca_file is not None:
            env["CORRAL_SANDBOX_ENVIRONMENT_CA_FILE"] = ctx.environment_ca_file
    for key in (kind, name):
        env.update((extra or {}).get(key, {}))
    return env


class Service(Component):
    """``<venv python> -m <module>`` with its environment, logging to ``logs/<name>.log``."""

    def __init__(
        self,
        state: StateDir,
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        port: PortClaim | None = None,
        metrics: PortClaim | None = None,
    ) -> None:
        super().__init__(state)
        self.name = name
        self.module = MODULES[kind_of(name)]
        self.env = dict(env or {})
        self.port = port
        self.metrics = metrics

    def port_claims(self) -> list[PortClaim]:
        return [claim for claim in (self.port, self.metrics) if claim is not None]

    def marker(self) -> str:
        return f"-m {self.module}"

    def launch(self) -> None:
        processes.spawn(
            [sys.executable, "-m", self.module],
            env=self.env or process_environment(),
            log_path=self.log_file,
            pid_path=self.pid_file,
        )


def wait_services_ready(
    services: Sequence[Service],
    *,
    gateway_url: str,
    model_url: str | None,
    deadline: float,
    on_ready: Callable[[str], None],
) -> None:
    """Until the gateway's ``/health`` is 200 (every service answers on the bus) and, when it
    runs, the embedded model's ``/health`` is 200. Fails fast when any service process exits.
    """
    model_ok = model_url is None
    gateway_answered = False
    reported: set[str] = set()
    last = "no answer"
    while True:
        for service in services:
            service.check_alive()
        if not model_ok and http_status(f"{model_url}/health") == 200:
            model_ok = True
            on_ready("embedded-model")
        response = http("GET", f"{gateway_url}/health")
        if response is not None:
            if not gateway_answered:
                gateway_answered = True
                on_ready("gateway")
                reported.add("gateway")  # its /health lists itself too: reported once
            last = f"{response.status} {response.body.decode(errors='replace')[:500]}"
            try:
                body = response.json()
            except ValueError:
                body = None
            states = body.get("services") if isinstance(body, dict) else None
            if isinstance(states, dict):
                for key, value in states.items():
                    if value == "ok" and key not in reported:
                        reported.add(key)
                        on_ready(key)
            if response.status == 200 and model_ok:
                return
        if time.monotonic() >= deadline:
            waiting = [] if model_ok else ["embedded-model (GET /health)"]
            raise ReadinessTimeoutError(
                "services",
                f"{', '.join([*waiting, 'gateway'])}: last GET {gateway_url}/health: {last}",
            )
        time.sleep(0.1)
