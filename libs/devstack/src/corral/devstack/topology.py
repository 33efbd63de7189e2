"""A stack's topology: which components it has, where each one listens, and how to reach them.

``Topology`` answers from the configuration and the state directory (pid files and the record of
the last ``up``): it starts and stops nothing (that is ``Stack``, in ``stack.py``).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

from corral.devstack.collector import NAME as COLLECTOR
from corral.devstack.collector import Collector
from corral.devstack.components import Component, PortClaim
from corral.devstack.configuration import StackConfig
from corral.devstack.configured import Configured
from corral.devstack.docker_engine import DockerEngine, ExternalDockerEngine
from corral.devstack.errors import DevstackError
from corral.devstack.nats import Nats, nats_nodes
from corral.devstack.nats_users import ADMIN
from corral.devstack.openbao import KV_MOUNT, AppRoleLogin, OpenBao
from corral.devstack.ports import HOST, PORT_SETTINGS, Ports
from corral.devstack.postgres import EmbeddedPostgres, ExternalPostgres
from corral.devstack.replicas import DOCKER_PREFIX, engine_number, gateway_port, host_data_root
from corral.devstack.services import (
    Service,
    ServiceContext,
    is_service_name,
    kind_of,
    metrics_port,
    service_environment,
    service_names,
)
from corral.devstack.state import StateDir
from corral.settings import NatsSettings

log = logging.getLogger("corral.devstack.stack")

INFRA = ("nats", "postgres", "openbao")
DOCKER = "docker"


class Topology(Configured):
    """The components of one stack rooted at ``state`` and how to reach them."""

    def __init__(
        self,
        state: StateDir,
        config: StackConfig,
        ports: Ports,
        service_env: Mapping[str, Mapping[str, str]] | None,
    ) -> None:
        self.state = state
        self.config = config
        self.ports = ports
        self.service_env = {name: dict(env) for name, env in (service_env or {}).items()}
        self.docker_data_root = self._docker_data_root()
        self._adopt_running_ports()

    # -- components -----------------------------------------------------------------------------

    def nats_nodes(self, size: int | None = None) -> list[Nats]:
        """Every NATS server of the stack (``CORRAL_NATS_CLUSTER``, or ``size``), node 1 first."""
        return nats_nodes(self.state, self.ports, size or self.config.nats_cluster_size, self.config.nats_sync_interval)

    def _known_nats_nodes(self) -> list[Nats]:
        """The configured servers and the last ``up``'s (``down`` stops those whatever the setting says now)."""
        recorded = self.state.read_record().get("nats_cluster")
        return self.nats_nodes() + (self.nats_nodes(recorded) if isinstance(recorded, int) else [])

    @property
    def nats(self) -> Nats:
        return self.nats_nodes()[0]  # the first server: its users and passwords are every node's

    @property
    def postgres(self) -> EmbeddedPostgres | ExternalPostgres:
        if self.external_database_url:
            return ExternalPostgres(self.state, self.external_database_url)
        return EmbeddedPostgres(self.state, self.ports.postgres)

    @property
    def openbao(self) -> OpenBao:
        return OpenBao(self.state, self.ports.bao, self.ports.bao_cluster)

    @property
    def tracing(self) -> bool:
        """``CORRAL_TRACING=1``: the stack runs the trace collector and the services export to it."""
        return self.config.tracing

    @property
    def collector(self) -> Collector:
        """The trace collector (running only with ``CORRAL_TRACING=1``)."""
        return Collector(self.state, self.ports.collector, forward=self.config.jaeger_otlp)

    @property
    def otel_endpoint(self) -> str | None:
        """Where the services export spans: the collector with ``CORRAL_TRACING=1``, else
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` (unset: no export)."""
        return self.collector.endpoint if self.tracing else self.config.otel_endpoint

    @property
    def docker_engine(self) -> DockerEngine | ExternalDockerEngine:
        """The engine this stack uses: ``CORRAL_DOCKER_HOST``, or its own dockerd."""
        if self.external_docker_host:
            return ExternalDockerEngine(self.state, self.external_docker_host)
        return DockerEngine(self.state, self.docker_data_root)

    def _docker_data_root(self) -> Path:
        """``CORRAL_DOCKER_DATA_ROOT`` or ``<state>/data/docker``; but an engine this state dir
        started (per the record of the last ``up``) keeps the data root it runs on."""
        data_root = self.config.docker_data_root or self.state.data("docker")
        recorded = self.recorded_docker()
        if isinstance(recorded, DockerEngine) and recorded.data_root != data_root.absolute() and recorded.owned():
            log.info("using the data root of the Docker engine already running: %s", recorded.data_root)
            return recorded.data_root
        return data_root

    def recorded_docker(self) -> DockerEngine | ExternalDockerEngine | None:
        """The engine of the last ``up`` (from ``stack.json``), if it had one."""
        recorded = self.state.read_record().get("docker")
        if not isinstance(recorded, dict):
            return None
        if recorded.get("external"):
            return ExternalDockerEngine(self.state, str(recorded.get("host")))
        data_root = recorded.get("data_root")
        return DockerEngine(self.state, Path(str(data_root))) if data_root else None

    def host_engines(self, count: int | None = None) -> list[DockerEngine]:
        """Sandbox hosts 2 and on's engines (``CORRAL_SANDBOX_HOSTS``, or ``count``); none on ``CORRAL_DOCKER_HOST``."""
        hosts = count or self.config.replicas.of("sandbox-manager")
        first, state = self.docker_data_root, self.state
        if self.external_docker_host:
            return []
        return [DockerEngine(state, host_data_root(first, n), name=f"{DOCKER_PREFIX}{n}") for n in range(2, hosts + 1)]

    def _known_host_engines(self) -> list[DockerEngine]:
        """The configured extra engines and the last ``up``'s."""
        recorded = self.state.read_record().get("sandbox_hosts")
        last = self.host_engines(recorded if isinstance(recorded, int) else 1)
        return list({e.name: e for e in [*self.host_engines(), *last]}.values())

    def docker_component(self) -> DockerEngine | ExternalDockerEngine | None:
        """The engine to run (``docker=True``), else one an earlier ``up`` started, else None."""
        if self.docker_enabled:
            return self.docker_engine
        recorded = self.recorded_docker()
        if recorded is not None:
            return recorded
        if self.state.pid_file(DOCKER).exists():
            return DockerEngine(self.state, self.docker_data_root)
        return None

    @property
    def docker_host(self) -> str | None:
        """The engine address the sandbox-manager gets (``CORRAL_DOCKER_HOST``)."""
        if self.docker_enabled:
            return self.docker_engine.host
        return self.external_docker_host

    @property
    def egress_socket_dir(self) -> Path:
        """Where the credential-proxies make each session's egress socket (``..._EGRESS_SOCKET_DIR``):
        under the temp dir, named for the state directory (a unix socket path has at most 107 bytes).
        Every Docker engine mounts these directories, so shares this machine's filesystem (as here)."""
        key = hashlib.sha256(str(self.state.root.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"corral-egress-{key}"

    def infra(self) -> list[Component]:
        components: list[Component] = [*self.nats_nodes(), self.postgres, self.openbao]
        if self.tracing:
            components.append(self.collector)
        if self.docker_enabled:
            components += [self.docker_engine, *self.host_engines()]
        return components

    def service_names(self) -> list[str]:
        if not self.services_enabled:
            return []
        return service_names(self.harness_count, self.model.embedded, self.config.replicas)

    def _service_port(self, name: str) -> PortClaim | None:
        if kind_of(name) == "gateway":
            return PortClaim(gateway_port(self.ports.gateway, name), "CORRAL_GATEWAY_PORT")
        if name == "embedded-model":
            return PortClaim(self.ports.embedded_model, "CORRAL_EMBEDDED_MODEL_PORT")
        return None

    def service_context(self) -> ServiceContext:
        """What every service is told about the stack (addresses, its credentials, the model)."""
        openbao = self.openbao
        login = openbao.credential_proxy_login() if openbao.init_data() is not None else None
        return ServiceContext(
            nats_url=self.nats_url,
            nats_replicas=self.config.nats_replicas,
            database_url=self.database_url,
            api_key=self.api_key,
            admin_api_key=self.admin_api_key,
            gateway_port=self.ports.gateway,
            embedded_model_port=self.ports.embedded_model,
            openbao_addr=openbao.addr,
            openbao_login=login,
            model=self.model,
            nats_passwords=self.nats.users.passwords(),
            log_level=self.log_level,
            otel_endpoint=self.otel_endpoint,
            docker_host=self.docker_host,
            sandbox_image=self.sandbox_image,
            egress_socket_dir=str(self.egress_socket_dir) if self.docker_host else None,
            egress_state_dir=str(self.state.data("egress")),
            environment_ca_file=self.environment_ca_file if self.docker_host else None,
            metrics_port=self.ports.metrics,
            sandbox_hosts=tuple(e.host for e in [self.docker_engine, *self.host_engines()])
            if self.docker_enabled
            else (),
        )

    def service(self, name: str, ctx: ServiceContext | None = None) -> Service:
        env = service_environment(name, ctx, base=self.environ, extra=self.service_env) if ctx is not None else None
        metrics = PortClaim(metrics_port(self.ports.metrics, name), "CORRAL_METRICS_PORT")
        return Service(self.state, name, env=env, port=self._service_port(name), metrics=metrics)

    def metrics_ports(self) -> dict[str, int]:
        """Each configured service's Prometheus metrics port (``CORRAL_METRICS_PORT`` and on)."""
        return {name: metrics_port(self.ports.metrics, name) for name in self.service_names()}

    def metrics_urls(self) -> dict[str, str]:
        """Each configured service's Prometheus endpoint."""
        return {name: f"http://{HOST}:{port}/metrics" for name, port in self.metrics_ports().items()}

    def known_service_names(self) -> list[str]:
        """The services of the last ``up`` (or the configured ones before any ``up``) plus any
        other service that has a pid file (e.g. a harness-3 from an earlier configuration)."""
        record = self.state.read_record()
        recorded = record.get("services")
        names = list(recorded) if isinstance(recorded, list) else self.service_names()
        for name in self.state.pid_names():
            if name not in INFRA and name not in names and is_service_name(name):
                names.append(name)
        return names

    def component(self, name: str) -> Component:
        for node in self._known_nats_nodes():
            if node.name == name:
                return node
        if name == "postgres":
            return self.postgres
        if name == "openbao":
            return self.openbao
        if name == COLLECTOR:
            return self.collector
        if name == DOCKER:
            return self.docker_component() or self.docker_engine
        if engine_number(name) is not None:
            return next(e for e in self._known_host_engines() if e.name == name)
        if is_service_name(name):
            return self.service(name)
        raise DevstackError(f"unknown component {name!r}")

    def components(self) -> list[Component]:
        infra: list[Component] = [*self.nats_nodes(), self.postgres, self.openbao]
        if self.tracing or self.collector.is_running():
            infra.append(self.collector)
        docker = self.docker_component()
        if docker is not None:
            infra += [docker, *(e for e in self._known_host_engines() if self.docker_enabled or e.is_running())]
        return [*infra, *(self.service(n) for n in self.known_service_names())]

    def _adopt_running_ports(self) -> None:
        """Components already running keep the ports recorded by the ``up`` that started them."""
        recorded_ports = self.state.read_record().get("ports")
        if not isinstance(recorded_ports, dict):
            return
        recorded = Ports.from_dict(recorded_ports)
        changes: dict[str, int] = {}
        running = {
            "nats": self.nats,
            "postgres": EmbeddedPostgres(self.state, recorded.postgres),
            "openbao": self.openbao,
            "collector": self.collector,
            "gateway": self.service("gateway"),
            "embedded-model": self.service("embedded-model"),
        }
        for component, instance in running.items():
            if instance.is_running():
                for setting in PORT_SETTINGS:
                    if setting.component == component:
                        changes[setting.field] = getattr(recorded, setting.field)
        if changes:
            adopted = self.ports.replace(**changes)
            if adopted != self.ports:
                log.info("using the ports of the components already running: %s", changes)
            self.ports = adopted

    # -- addresses ------------------------------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        return f"http://{HOST}:{self.ports.gateway}"

    @property
    def gateway_urls(self) -> list[str]:
        """Every gateway's URL (``CORRAL_GATEWAY_COUNT``), ``gateway`` first."""
        names = self.config.replicas.names("gateway")
        return [f"http://{HOST}:{gateway_port(self.ports.gateway, name)}" for name in names]

    @property
    def api_key(self) -> str:
        return self.state.dev_api_key()

    @property
    def admin_api_key(self) -> str:
        """The key with role ``admin`` (the admin API, ``/v1/organizations/...``), in ``.corral/admin-key``."""
        return self.state.admin_api_key()

    @property
    def nats_url(self) -> str:
        """The NATS server's URL; a cluster's every server, comma-separated (what ``CORRAL_NATS_URL`` takes)."""
        return ",".join(node.url for node in self.nats_nodes())

    def nats_settings(self, user: str = ADMIN, **overrides: float) -> NatsSettings:
        """Settings to connect to this stack's NATS as ``user`` (default ``admin``, which has no
        limits: for the launcher's checks, tests and benchmarks; services get their own users)."""
        password = self.nats.users.password(user)
        settings: dict[str, float] = {"replicas": self.config.nats_replicas, **overrides}
        return NatsSettings(url=self.nats_url, user=user, password=password, **settings)  # type: ignore[arg-type]

    @property
    def nats_monitor_url(self) -> str:
        return self.nats.monitor_url

    @property
    def database_url(self) -> str:
        return self.postgres.dsn

    @property
    def vault_addr(self) -> str:
        return self.openbao.addr

    @property
    def vault_token(self) -> str:
        """OpenBao's root token: the launcher's (and tests'); no service gets it."""
        return self.openbao.root_token

    @property
    def credential_proxy_login(self) -> AppRoleLogin:
        """The credential-proxy's AppRole login (its tokens carry policy ``corral-credential-proxy`` only)."""
        return self.openbao.credential_proxy_login()

    @property
    def kv_mount(self) -> str:
        return KV_MOUNT

    def client_env(self) -> dict[str, str]:
        """What unchanged ``anthropic`` SDK code needs to talk to this stack."""
        return {"ANTHROPIC_BASE_URL": self.gateway_url, "ANTHROPIC_API_KEY": self.api_key}

    def client_kwargs(self) -> dict[str, str]:
        """``anthropic.Anthropic(**stack.client_kwargs())``."""
        return {"base_url": self.gateway_url, "api_key": self.api_key}

    def log_path(self, name: str) -> Path:
        return self.state.log_file(name)
