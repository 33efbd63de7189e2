"""The Stack API: bring the whole stack (or only its infrastructure) up and down, by pid."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from corral.devstack import processes
from corral.devstack.components import Component, ComponentStatus, PortClaim
from corral.devstack.docker_engine import DOCKER_STOP_TIMEOUT, DockerEngine, ExternalDockerEngine
from corral.devstack.errors import DevstackError, PortInUseError
from corral.devstack.nats import SYNC_INTERVAL_VAR, Nats, sync_interval
from corral.devstack.nats_users import ADMIN
from corral.devstack.openbao import KV_MOUNT, OpenBao
from corral.devstack.ports import HOST, PORT_SETTINGS, Ports, port_in_use
from corral.devstack.postgres import EmbeddedPostgres, ExternalPostgres
from corral.devstack.sandbox_image import NAME as IMAGE_LOG_NAME
from corral.devstack.sandbox_image import ImageBuilder, ImageSettings
from corral.devstack.services import (
    MODULES,
    ModelConfig,
    Service,
    ServiceContext,
    service_environment,
    service_names,
    wait_services_ready,
)
from corral.devstack.state import StateDir
from corral.settings import NatsSettings

log = logging.getLogger(__name__)

INFRA = ("nats", "postgres", "openbao")
DOCKER = "docker"
DEFAULT_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

Progress = Callable[[str], None]

#: What the sandbox-manager's environment image builds trust besides the sandbox image's CAs.
ENVIRONMENT_CA_VAR = "CORRAL_SANDBOX_ENVIRONMENT_CA_FILE"


def host_ca_bundle() -> str | None:
    """This host's CA bundle, the one Python verifies TLS against by default (``SSL_CERT_FILE``, else
    OpenSSL's, e.g. ``/etc/ssl/certs/ca-certificates.crt``), if it has one."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _log_progress(line: str) -> None:
    log.info("%s", line)


def _int_env(environ: Mapping[str, str], var: str, default: int) -> int:
    raw = environ.get(var, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise DevstackError(f"{var}={raw!r} is not an integer") from None


class Stack:
    """One Corral dev stack, rooted at a state directory.

    ``Stack(path, Ports.free(), services=False)`` is NATS + Postgres + OpenBao only.
    ``docker=True`` adds a Docker engine (a private ``dockerd``, or ``CORRAL_DOCKER_HOST``) and the
    sandbox image built into it, with or without the services.
    ``environ`` (default ``os.environ``) is where settings are read from: ports (when
    ``ports`` is None), ``DATABASE_URL``, the model choice, ``CORRAL_LOG_LEVEL``,
    ``CORRAL_HARNESS_COUNT``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``CORRAL_DOCKER_HOST``,
    ``CORRAL_DOCKER_DATA_ROOT``, ``CORRAL_SANDBOX_*``.
    Components that are already running (per their pid file) keep the ports they run on.
    """

    def __init__(
        self,
        state_dir: Path | str,
        ports: Ports | None = None,
        *,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        harness_count: int | None = None,
        services: bool = True,
        docker: bool = False,
        environ: Mapping[str, str] | None = None,
        log_level: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.environ: dict[str, str] = dict(os.environ if environ is None else environ)
        self.state = StateDir.at(state_dir)
        self.ports = ports if ports is not None else Ports.from_env(self.environ)
        self.harness_count = (
            harness_count if harness_count is not None else _int_env(self.environ, "CORRAL_HARNESS_COUNT", 2)
        )
        if self.harness_count < 1:
            raise DevstackError("CORRAL_HARNESS_COUNT must be at least 1")
        self.services_enabled = services
        self.service_env = {name: dict(env) for name, env in (service_env or {}).items()}
        self.log_level = log_level or self.environ.get("CORRAL_LOG_LEVEL") or "INFO"
        self.external_database_url = self.environ.get("DATABASE_URL") or None
        self.docker_enabled = docker
        self.external_docker_host = self.environ.get("CORRAL_DOCKER_HOST") or None
        self.docker_data_root = self._docker_data_root()
        self.progress: Progress = progress or _log_progress
        self._adopt_running_ports()

    # -- configuration -------------------------------------------------------------------

    @property
    def model(self) -> ModelConfig:
        return ModelConfig.from_env(self.environ, self.ports.embedded_model)

    @property
    def nats(self) -> Nats:
        return Nats(
            self.state,
            self.ports.nats,
            self.ports.nats_monitor,
            sync_interval=sync_interval(self.environ.get(SYNC_INTERVAL_VAR)),
        )

    @property
    def postgres(self) -> EmbeddedPostgres | ExternalPostgres:
        if self.external_database_url:
            return ExternalPostgres(self.state, self.external_database_url)
        return EmbeddedPostgres(self.state, self.ports.postgres)

    @property
    def openbao(self) -> OpenBao:
        return OpenBao(self.state, self.ports.bao, self.ports.bao_cluster)

    @property
    def docker_engine(self) -> DockerEngine | ExternalDockerEngine:
        """The engine this stack uses: ``CORRAL_DOCKER_HOST``, or its own dockerd."""
        if self.external_docker_host:
            return ExternalDockerEngine(self.state, self.external_docker_host)
        return DockerEngine(self.state, self.docker_data_root)

    @property
    def image_settings(self) -> ImageSettings:
        return ImageSettings.from_env(self.environ)

    def _docker_data_root(self) -> Path:
        """``CORRAL_DOCKER_DATA_ROOT`` or ``<state>/data/docker``; but an engine this state dir
        started (per the record of the last ``up``) keeps the data root it runs on."""
        configured = self.environ.get("CORRAL_DOCKER_DATA_ROOT", "").strip()
        data_root = Path(configured) if configured else self.state.data("docker")
        recorded = self._recorded_docker()
        if isinstance(recorded, DockerEngine) and recorded.data_root != data_root.absolute() and recorded.owned():
            log.info("using the data root of the Docker engine already running: %s", recorded.data_root)
            return recorded.data_root
        return data_root

    def _recorded_docker(self) -> DockerEngine | ExternalDockerEngine | None:
        """The engine of the last ``up`` (from ``stack.json``), if it had one."""
        recorded = self.state.read_record().get("docker")
        if not isinstance(recorded, dict):
            return None
        if recorded.get("external"):
            return ExternalDockerEngine(self.state, str(recorded.get("host")))
        data_root = recorded.get("data_root")
        return DockerEngine(self.state, Path(str(data_root))) if data_root else None

    def _docker_component(self) -> DockerEngine | ExternalDockerEngine | None:
        """The engine to run (``docker=True``), else one an earlier ``up`` started, else None."""
        if self.docker_enabled:
            return self.docker_engine
        recorded = self._recorded_docker()
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
        """Where the credential-proxy makes each session's egress socket (``CORRAL_EGRESS_SOCKET_DIR``).

        Under the temp dir, named for the state directory: a unix socket path has at most 107 bytes,
        which a deep state directory plus a session id would exceed. The Docker engine mounts these
        directories, so it must share this machine's filesystem (it does: devstack runs it here).
        """
        key = hashlib.sha256(str(self.state.root.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"corral-egress-{key}"

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
    def sandbox_image(self) -> str | None:
        """The image the sandbox-manager gets (``CORRAL_SANDBOX_IMAGE``): the content tag."""
        if self.docker_enabled:
            return self.image_settings.tag
        return self.environ.get("CORRAL_SANDBOX_IMAGE") or None

    def infra(self) -> list[Component]:
        components: list[Component] = [self.nats, self.postgres, self.openbao]
        if self.docker_enabled:
            components.append(self.docker_engine)
        return components

    def service_names(self) -> list[str]:
        if not self.services_enabled:
            return []
        return service_names(self.harness_count, self.model.embedded)

    def _service_port(self, name: str) -> PortClaim | None:
        if name == "gateway":
            return PortClaim(self.ports.gateway, "CORRAL_GATEWAY_PORT")
        if name == "embedded-model":
            return PortClaim(self.ports.embedded_model, "CORRAL_EMBEDDED_MODEL_PORT")
        return None

    def _context(self) -> ServiceContext:
        openbao = self.openbao
        token = openbao.credential_proxy_token() if openbao.init_data() is not None else ""
        return ServiceContext(
            nats_url=self.nats_url,
            database_url=self.database_url,
            api_key=self.api_key,
            gateway_port=self.ports.gateway,
            embedded_model_port=self.ports.embedded_model,
            vault_addr=openbao.addr,
            vault_token=token,
            model=self.model,
            nats_passwords=self.nats.users.passwords(),
            log_level=self.log_level,
            otel_endpoint=self.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            docker_host=self.docker_host,
            sandbox_image=self.sandbox_image,
            egress_socket_dir=str(self.egress_socket_dir) if self.docker_host else None,
            environment_ca_file=self.environment_ca_file if self.docker_host else None,
        )

    def service(self, name: str, ctx: ServiceContext | None = None) -> Service:
        env = service_environment(name, ctx, base=os.environ, extra=self.service_env) if ctx is not None else None
        return Service(self.state, name, env=env, port=self._service_port(name))

    def _known_service_names(self) -> list[str]:
        """The services of the last ``up`` (or the configured ones before any ``up``) plus any
        other service that has a pid file (e.g. a harness-3 from an earlier configuration)."""
        record = self.state.read_record()
        recorded = record.get("services")
        names = list(recorded) if isinstance(recorded, list) else self.service_names()
        for name in self.state.pid_names():
            if name not in INFRA and name not in names and _is_service_name(name):
                names.append(name)
        return names

    def component(self, name: str) -> Component:
        if name == "nats":
            return self.nats
        if name == "postgres":
            return self.postgres
        if name == "openbao":
            return self.openbao
        if name == DOCKER:
            return self._docker_component() or self.docker_engine
        if _is_service_name(name):
            return self.service(name)
        raise DevstackError(f"unknown component {name!r}")

    def components(self) -> list[Component]:
        infra: list[Component] = [self.nats, self.postgres, self.openbao]
        docker = self._docker_component()
        if docker is not None:
            infra.append(docker)
        return [*infra, *(self.service(n) for n in self._known_service_names())]

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

    # -- addresses -----------------------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        return f"http://{HOST}:{self.ports.gateway}"

    @property
    def api_key(self) -> str:
        return self.state.dev_api_key()

    @property
    def nats_url(self) -> str:
        return self.nats.url

    def nats_settings(self, user: str = ADMIN, **overrides: float) -> NatsSettings:
        """Settings to connect to this stack's NATS as ``user`` (default ``admin``, which has no
        limits: for the launcher's checks, tests and benchmarks; services get their own users)."""
        password = self.nats.users.password(user)
        return NatsSettings(url=self.nats_url, user=user, password=password, **overrides)  # type: ignore[arg-type]

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
    def credential_proxy_vault_token(self) -> str:
        """The credential-proxy's own token (policy ``corral-credential-proxy`` only)."""
        return self.openbao.credential_proxy_token()

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

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Start whatever is not running yet and wait until everything is healthy.

        Components already running are left alone. Every port is checked before anything is
        started; on any failure the components this call started are stopped again.
        """
        began = time.monotonic()
        deadline = began + timeout
        with self.state.lock():
            self.state.ensure_layout()
            self._adopt_running_ports()
            infra = self.infra()
            planned: list[Component] = [*infra, *(self.service(n) for n in self.service_names())]
            running = {c.name: c.pid() for c in planned if c.is_running()}
            self._check_ports([c for c in planned if c.name not in running])
            self._write_record()
            started: list[Component] = []
            try:
                for component in infra:
                    self._bring_up(component, running, started, deadline)
                if self.docker_enabled:
                    building = time.monotonic()
                    self._ensure_image()
                    deadline += time.monotonic() - building  # the build has its own time limit
                self.state.write_client_env(self.gateway_url, self.api_key)
                if self.services_enabled:
                    self._bring_up_services(running, started, deadline)
            except BaseException:
                self._rollback(started)
                raise
        self.progress(f"all up in {time.monotonic() - began:.1f}s")

    def _check_ports(self, to_start: list[Component]) -> None:
        owners: dict[int, tuple[str, str]] = {}
        for component in to_start:
            for claim in component.port_claims():
                if claim.port in owners:
                    other, other_var = owners[claim.port]
                    raise DevstackError(
                        f"port {claim.port} is configured twice: {other} ({other_var}) and "
                        f"{component.name} ({claim.env_var}); give one another port"
                    )
                owners[claim.port] = (component.name, claim.env_var)
                if port_in_use(claim.port):
                    raise PortInUseError(claim.port, component.name, claim.env_var)

    def _write_record(self) -> None:
        record: dict[str, Any] = {
            "ports": self.ports.as_dict(),
            "services": self.service_names(),
            "harness_count": self.harness_count,
            "model": self.model.describe(),
            "external_database": self.external_database_url is not None,
            "docker": self._docker_record(),
        }
        self.state.write_record(record)

    def _docker_record(self) -> dict[str, Any] | None:
        if self.docker_enabled:
            engine = self.docker_engine
            if isinstance(engine, ExternalDockerEngine):
                return {"external": True, "host": engine.host}
            return {"external": False, "host": engine.host, "data_root": str(engine.data_root)}
        previous = self._recorded_docker()  # still running from an earlier up: keep stopping it
        if isinstance(previous, DockerEngine) and previous.owned():
            return {"external": False, "host": previous.host, "data_root": str(previous.data_root)}
        return None

    def _ensure_image(self, *, rebuild: bool = False) -> str:
        engine = self.docker_engine
        builder = ImageBuilder(
            engine.host,
            self.image_settings,
            log_path=self.state.log_file(IMAGE_LOG_NAME),
            lock_path=engine.build_lock_file,
            progress=self.progress,
        )
        return builder.ensure(rebuild=rebuild)

    def build_image(self, *, rebuild: bool = False, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The sandbox image tag, built into the engine if missing (or ``rebuild``).

        Uses the running engine; if there is none, starts this stack's engine for the build and
        stops it again afterwards.
        """
        deadline = time.monotonic() + timeout
        with self.state.lock():
            self.state.ensure_layout()
            engine = self.docker_engine
            started: list[Component] = []
            try:
                self._bring_up(engine, {DOCKER: engine.pid()} if engine.is_running() else {}, started, deadline)
                return self._ensure_image(rebuild=rebuild)
            finally:
                for component in started:
                    if isinstance(component, DockerEngine) and component.owned():
                        pid = component.pid()
                        component.stop(DOCKER_STOP_TIMEOUT)
                        self.progress(_line(component.name, "stopped", pid, "(started for the build)"))

    def _bring_up(
        self,
        component: Component,
        running: Mapping[str, int | None],
        started: list[Component],
        deadline: float,
    ) -> None:
        t0 = time.monotonic()
        if component.name in running:
            component.wait_ready(deadline)
            pid = running[component.name]
            self.progress(_line(component.name, "already running", pid, component.describe()))
            return
        component.launch()
        started.append(component)
        component.wait_ready(deadline)
        took = f"ready in {time.monotonic() - t0:.1f}s"
        self.progress(_line(component.name, took, component.pid(), component.describe()))

    def _bring_up_services(
        self,
        running: Mapping[str, int | None],
        started: list[Component],
        deadline: float,
    ) -> None:
        ctx = self._context()
        services = [self.service(name, ctx) for name in self.service_names()]
        t0 = time.monotonic()
        for service in services:
            if service.name in running:
                self.progress(_line(service.name, "already running", running[service.name], service.describe()))
                continue
            service.launch()
            started.append(service)
            self.progress(_line(service.name, "started", service.pid(), service.describe()))
        self._wait_services(services, deadline, t0)

    def _wait_services(self, services: list[Service], deadline: float, t0: float) -> None:
        def on_ready(name: str) -> None:
            self.progress(f"{name:<17} ready in {time.monotonic() - t0:.1f}s")

        wait_services_ready(
            services,
            gateway_url=self.gateway_url,
            model_url=self.model.base_url if self.model.embedded else None,
            deadline=deadline,
            on_ready=on_ready,
        )

    def _rollback(self, started: list[Component]) -> None:
        for component in reversed(started):
            self.progress(f"{component.name:<17} stopping (started by this run)")
            try:
                component.stop(STOP_TIMEOUT)
            except Exception:  # keep stopping the others
                log.exception("could not stop %s", component.name)

    def wait_healthy(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait (without starting anything) until every component is healthy."""
        deadline = time.monotonic() + timeout
        for component in self.infra():
            component.wait_ready(deadline)
        if self.services_enabled:
            services = [self.service(n) for n in self.service_names()]
            self._wait_services(services, deadline, time.monotonic())

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop everything that has a pid file: services first, then the Docker engine (if this
        state dir started it; dockerd stops its containers), OpenBao, Postgres, NATS.

        By pid only. Data directories are kept.
        """
        with self.state.lock():
            services = [self.service(n) for n in self._known_service_names()]
            alive = {s.name: s.pid() for s in services}
            pids = [pid for pid in alive.values() if pid is not None]
            killed = processes.terminate_all(pids, timeout=timeout)
            for name, pid in alive.items():
                if pid is not None:
                    what = f"killed (no exit in {timeout:.0f}s)" if pid in killed else "stopped"
                    self.progress(_line(name, what, pid, ""))
            for service in services:
                processes.remove_pid_file(service.pid_file)
            docker = self._docker_component()
            if isinstance(docker, DockerEngine):
                pid = docker.pid()
                if pid is not None and not docker.owned():
                    self.progress(_line(docker.name, "left running", pid, f"(shared: started by {docker.owner()})"))
                else:
                    docker.stop(max(timeout, DOCKER_STOP_TIMEOUT))
                    if pid is not None:
                        self.progress(_line(docker.name, "stopped", pid, ""))
            embedded_pg = EmbeddedPostgres(self.state, self.ports.postgres)
            for component in (self.openbao, embedded_pg, self.nats):
                pid = component.pid()
                component.stop(timeout if component is not embedded_pg else 30.0)
                if pid is not None:
                    self.progress(_line(component.name, "stopped", pid, ""))

    def status(self) -> list[ComponentStatus]:
        return [component.status() for component in self.components()]

    # -- single components (fault tests) -------------------------------------------------

    def pid(self, name: str) -> int | None:
        return self.component(name).pid()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to a component's process (its pid file stays); returns the pid."""
        pid = self.pid(name)
        if pid is None:
            raise DevstackError(f"{name} is not running")
        os.kill(pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            processes.wait_exit(pid, time.monotonic() + STOP_TIMEOUT)
        return pid

    def start_service(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Start one service (if not running) and wait until the stack is healthy again."""
        if not _is_service_name(name):
            raise DevstackError(f"{name!r} is not a service")
        deadline = time.monotonic() + timeout
        with self.state.lock():
            service = self.service(name, self._context())
            if not service.is_running():
                self._check_ports([service])
                service.launch()
        self._wait_services([service], deadline, time.monotonic())

    def stop_service(self, name: str, timeout: float = STOP_TIMEOUT) -> None:
        if not _is_service_name(name):
            raise DevstackError(f"{name!r} is not a service")
        self.service(name).stop(timeout)

    def restart_service(self, name: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.stop_service(name)
        self.start_service(name, timeout)

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _line(name: str, what: str, pid: int | None, where: str) -> str:
    pid_text = f"pid {pid}" if pid else ""
    where_text = "" if where == "-" else where
    return f"{name:<17} {what:<16} {pid_text:<10} {where_text}".rstrip()


def _is_service_name(name: str) -> bool:
    if name.startswith("harness-"):
        return name.removeprefix("harness-").isdigit()
    return name in MODULES and name != "harness"
