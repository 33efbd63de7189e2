"""The Stack API: bring the whole stack (or only its infrastructure) up and down, by pid.

``Stack`` is the lifecycle (start, stop, single components for fault tests); what the stack is made
of is its configuration (``configuration.StackConfig``, pure) and its topology (``topology.Topology``:
the components, their ports and addresses), which ``Stack`` extends.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from corral.devstack import processes
from corral.devstack.components import Component, ComponentStatus
from corral.devstack.configuration import ENVIRONMENT_CA_VAR, StackConfig, host_ca_bundle
from corral.devstack.docker_engine import DOCKER_STOP_TIMEOUT, DockerEngine, ExternalDockerEngine
from corral.devstack.errors import DevstackError, PortInUseError
from corral.devstack.nats_users import SUBSCRIBER
from corral.devstack.ports import Ports, port_in_use
from corral.devstack.postgres import EmbeddedPostgres
from corral.devstack.progress import Progress, step
from corral.devstack.sandbox_image import NAME as IMAGE_LOG_NAME
from corral.devstack.sandbox_image import ImageBuilder, copy_image
from corral.devstack.services import Service, is_service_name, wait_services_ready
from corral.devstack.state import StateDir
from corral.devstack.topology import DOCKER, INFRA, Topology

__all__ = [
    "DEFAULT_TIMEOUT",
    "DOCKER",
    "ENVIRONMENT_CA_VAR",
    "EXIT_WITHIN_S",
    "INFRA",
    "STOP_TIMEOUT",
    "Progress",
    "Stack",
    "host_ca_bundle",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
#: Seconds a service may take to exit after SIGTERM: it ends its tasks and closes its clients in
#: about a second; ``stop`` logs one that takes longer (its shutdown waits on something).
EXIT_WITHIN_S = 5.0


def _log_progress(line: str) -> None:
    log.info("%s", line)


class Stack(Topology):
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
        config = StackConfig.read(
            environ=environ, harness_count=harness_count, services=services, docker=docker, log_level=log_level
        )
        super().__init__(
            StateDir.at(state_dir),
            config,
            ports if ports is not None else config.ports,
            service_env,
        )
        self.progress: Progress = progress or _log_progress

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
                    image = self._ensure_image()
                    for engine in self.host_engines():  # every sandbox host runs the same image
                        copy_image(self.docker_engine.host, engine.host, image)
                    deadline += time.monotonic() - building  # the build has its own time limit
                self.state.write_client_env(self.gateway_url, self.api_key)
                self.state.write_subscriber_env(self.nats_url, SUBSCRIBER, self.nats.users.password(SUBSCRIBER))
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
            "nats_cluster": self.config.nats_cluster_size,
            "sandbox_hosts": len(self.host_engines()) + 1,
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
        previous = self.recorded_docker()  # still running from an earlier up: keep stopping it
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
        with step(self.progress, f"{component.name:<17} {component.starting()}"):
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
        ctx = self.service_context()
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

        with step(self.progress, f"{'services':<17} waiting until every service is healthy"):
            for gateway_url in self.gateway_urls:  # each gateway answers once every service does
                wait_services_ready(
                    services,
                    gateway_url=gateway_url,
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

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[str, float | None]:
        """Stop everything that has a pid file: services first, then the Docker engine (if this
        state dir started it; dockerd stops its containers), OpenBao, Postgres, NATS.

        By pid only. Data directories are kept. Returns how long each component that was running
        took to stop, in seconds (``None``: killed after ``timeout``); a service is signalled with
        SIGTERM and should be gone within ``EXIT_WITHIN_S``, and one that is not is logged.
        """
        took: dict[str, float | None] = {}
        with self.state.lock():
            services = [self.service(n) for n in self.known_service_names()]
            alive = {s.name: s.pid() for s in services}
            pids = [pid for pid in alive.values() if pid is not None]
            exits = processes.terminate_timed(pids, timeout=timeout)
            for name, pid in alive.items():
                if pid is None:
                    continue
                took[name] = seconds = exits.get(pid)
                if seconds is None:
                    self.progress(_line(name, f"killed (no exit in {timeout:.0f}s)", pid, ""))
                    continue
                self.progress(_line(name, f"stopped in {seconds:.1f}s", pid, ""))
                if seconds > EXIT_WITHIN_S:
                    log.warning(
                        "%s took %.1fs to exit after SIGTERM (more than %.0fs): its shutdown waits on "
                        "something; see %s",
                        name,
                        seconds,
                        EXIT_WITHIN_S,
                        self.log_path(name),
                    )
            for service in services:
                processes.remove_pid_file(service.pid_file)
            for engine in self._known_host_engines():
                pid = engine.pid()
                started = time.monotonic()
                engine.stop(max(timeout, DOCKER_STOP_TIMEOUT))
                if pid is not None:
                    took[engine.name] = time.monotonic() - started
                    self.progress(_line(engine.name, f"stopped in {took[engine.name]:.1f}s", pid, ""))
            docker = self.docker_component()
            if isinstance(docker, DockerEngine):
                pid = docker.pid()
                if pid is not None and not docker.owned():
                    self.progress(_line(docker.name, "left running", pid, f"(shared: started by {docker.owner()})"))
                else:
                    started = time.monotonic()
                    docker.stop(max(timeout, DOCKER_STOP_TIMEOUT))
                    if pid is not None:
                        took[docker.name] = time.monotonic() - started
                        self.progress(_line(docker.name, f"stopped in {took[docker.name]:.1f}s", pid, ""))
            embedded_pg = EmbeddedPostgres(self.state, self.ports.postgres)
            for component in (self.collector, self.openbao, embedded_pg, *self._known_nats_nodes()):
                pid = component.pid()
                started = time.monotonic()
                component.stop(timeout if component is not embedded_pg else 30.0)
                if pid is not None:
                    took[component.name] = time.monotonic() - started
                    self.progress(_line(component.name, f"stopped in {took[component.name]:.1f}s", pid, ""))
        return took

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
        if not is_service_name(name):
            raise DevstackError(f"{name!r} is not a service")
        deadline = time.monotonic() + timeout
        with self.state.lock():
            service = self.service(name, self.service_context())
            if not service.is_running():
                self._check_ports([service])
                service.launch()
        self._wait_services([service], deadline, time.monotonic())

    def stop_service(self, name: str, timeout: float = STOP_TIMEOUT) -> None:
        if not is_service_name(name):
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
