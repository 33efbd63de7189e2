"""The Docker driver: a small explicit wrapper around the (blocking) docker SDK.

Every call runs on the driver's own worker threads, which ``aclose`` waits for (a container being
created when the manager stops is removed, not left behind). What a sandbox container is, and how
it is hardened, is ``container_spec``'s.

Environment images are built here too (``run_build``, see ``builds``): a build container, labelled
``corral.build.scope`` and never ``corral.managed`` (``managed`` never lists one;
``build_containers`` does), each on a connection of its own that ``aclose`` cuts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import docker
from docker.errors import DockerException, ImageNotFound, NotFound

from corral.contracts.egress import SANDBOX_EGRESS_DIR
from corral.sandbox_manager.builds import LABEL_BUILD_SCOPE, Build, BuildJob, run_build
from corral.sandbox_manager.container_spec import (
    EGRESS,
    LABEL_CONFIG,
    LABEL_ENVIRONMENT,
    LABEL_MANAGED,
    LABEL_NETWORK,
    LABEL_POOL,
    LABEL_SCOPE,
    LABEL_SESSION,
    ContainerInfo,
    ContainerSpec,
    create_arguments,
)
from corral.sandbox_manager.egress import EgressMount

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a cancelled build is given to remove its container before the caller moves on.
BUILD_REMOVAL_WAIT_S: Final = 30.0


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a worker's outcome as seen (a cancelled caller no longer awaits it)."""
    if not future.cancelled():
        future.exception()


class EngineUnavailable(Exception):
    """No Docker engine answers, or the sandbox image is missing; the message says what to do."""


class Driver:
    def __init__(self, docker_host: str | None, scope: str) -> None:
        self._docker_host = docker_host
        self.scope = scope
        self._client: docker.DockerClient | None = None
        self._threads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="docker")
        self._closing = threading.Event()
        #: Containers started whose caller has not received them yet (removed by ``aclose`` if never).
        self._unclaimed: set[str] = set()
        #: Image builds running now (``aclose`` stops them).
        self._builds: set[Build] = set()

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, functools.partial(fn, *args))

    async def _owned_in_thread(self, fn: Callable[..., T], *args: Any, release: Callable[[T], None]) -> T:
        """``fn`` in a worker thread, for a result the caller must release (a socket): a caller
        cancelled while the thread still runs never receives it, so it is released when it arrives."""
        future = asyncio.get_running_loop().run_in_executor(self._threads, functools.partial(fn, *args))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:

            def unclaimed(done: asyncio.Future[T]) -> None:
                if not done.cancelled() and done.exception() is None:
                    release(done.result())

            future.add_done_callback(unclaimed)
            raise

    # --- connection ------------------------------------------------------------------------------------
    def _connect(self, *, timeout: int, max_pool_size: int) -> docker.DockerClient:
        if self._docker_host:
            return docker.DockerClient(base_url=self._docker_host, timeout=timeout, max_pool_size=max_pool_size)
        return docker.from_env(timeout=timeout, max_pool_size=max_pool_size)

    def _api(self) -> docker.APIClient:
        if self._client is None:
            self._client = self._connect(timeout=60, max_pool_size=32)
        return self._client.api

    def where(self) -> str:
        return self._docker_host or "the docker SDK's default (DOCKER_HOST or /var/run/docker.sock)"

    async def version(self, timeout: float) -> str | None:
        """The engine's version, or ``None`` when no engine answers within ``timeout``."""

        def ping() -> str:
            if self._docker_host and self._docker_host.startswith("unix://"):
                # The SDK leaks its socket when a unix connect fails; look first, closing ours.
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.settimeout(timeout)
                    probe.connect(self._docker_host.removeprefix("unix://"))
            return str(self._api().version().get("Version", "unknown"))

        try:
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancel
                return await self._in_thread(ping)
        except (DockerException, OSError, TimeoutError):
            return None

    async def has_image(self, image: str) -> bool:
        def inspect() -> bool:
            try:
                self._api().inspect_image(image)  # type: ignore[no-untyped-call]  # untyped in types-docker
            except ImageNotFound:
                return False
            return True

        return await self._in_thread(inspect)

    async def image_id(self, ref: str) -> str | None:
        """The id of image ``ref`` on the engine, ``None`` when it has no such image."""

        def inspect() -> str | None:
            try:
                return str(self._api().inspect_image(ref)["Id"])  # type: ignore[no-untyped-call]  # untyped in types-docker
            except ImageNotFound:
                return None

        return await self._in_thread(inspect)

    async def run_build(self, job: BuildJob, *, timeout_s: float, on_line: Callable[[str], None]) -> str:
        """Run ``job``'s build container, commit it as ``job.tag`` and remove it; the image id.
        ``on_line`` is called from a worker thread with each output line. Cancelling the call stops the
        build and waits (at most ``BUILD_REMOVAL_WAIT_S``) until its container is removed.

        Raises:
            BuildError: the build script failed (its exit code), or ran out of memory.
            BuildStopped: the driver is closing.
            DockerException, OSError: the engine refused or the connection broke.
        """
        build = Build()
        if self._closing.is_set():
            build.stop()
        self._builds.add(build)

        def run() -> str:
            client = self._connect(timeout=int(timeout_s) + 1, max_pool_size=2)
            try:
                return run_build(client, build, job, on_line=on_line, wait_s=timeout_s)
            finally:
                client.close()

        done = asyncio.get_running_loop().run_in_executor(self._threads, run)
        done.add_done_callback(_retrieve)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            build.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([done], timeout=BUILD_REMOVAL_WAIT_S)
            raise
        finally:
            self._builds.discard(build)

    # --- containers ----------------------------------------------------------------------------------------
    def labels(self, spec: ContainerSpec, *, session_id: str | None, environment_id: str | None) -> dict[str, str]:
        labels = {LABEL_MANAGED: "true", LABEL_SCOPE: self.scope, LABEL_CONFIG: spec.hash, LABEL_NETWORK: spec.network}
        if session_id is None:
            labels[LABEL_POOL] = "true"
        else:
            labels[LABEL_SESSION] = session_id
            labels[LABEL_ENVIRONMENT] = environment_id or ""
        return labels

    async def launch(
        self, spec: ContainerSpec, name: str, labels: dict[str, str], *, egress: EgressMount | None = None
    ) -> tuple[str, socket.socket]:
        """Create and start a container running the exec agent; its stdin/stdout as a socket.

        The attach happens before the start, so nothing the agent writes is missed. ``egress`` (for a
        spec with network ``egress``) mounts the session's proxy socket directory, read-only, and
        points the proxy variables at the agent's relay.
        """
        if (egress is not None) != (spec.network == EGRESS):
            raise ValueError("an egress mount goes with a spec whose network is 'egress', and only with one")
        # a launch cancelled meanwhile: its socket is closed here, its container removed by ``aclose``
        container_id, sock = await self._owned_in_thread(
            self._launch, spec, name, labels, egress, release=lambda launched: launched[1].close()
        )
        self._unclaimed.discard(container_id)
        return container_id, sock

    def _launch(
        self, spec: ContainerSpec, name: str, labels: dict[str, str], egress: EgressMount | None
    ) -> tuple[str, socket.socket]:
        api = self._api()
        created = api.create_container(spec.image, **create_arguments(api, spec, name, labels, egress))
        container_id = str(created["Id"])
        sock: socket.socket | None = None
        try:
            sock = self._attach(container_id)
            api.start(container_id)
            if self._closing.is_set():
                raise EngineUnavailable("the sandbox-manager is stopping")
        except BaseException:
            if sock is not None:
                sock.close()
            self._remove(container_id)
            raise
        self._unclaimed.add(container_id)
        return container_id, sock

    async def attach(self, container_id: str) -> socket.socket:
        return await self._owned_in_thread(self._attach, container_id, release=socket.socket.close)

    def _attach(self, container_id: str) -> socket.socket:
        api = self._api()
        wrapped: Any = api.attach_socket(container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        raw = getattr(wrapped, "_sock", wrapped)
        if not isinstance(raw, socket.socket):
            wrapped.close()
            raise EngineUnavailable(
                "the Docker engine is reached over a transport this sandbox-manager cannot attach to "
                "(use a unix socket or plain tcp:// CORRAL_DOCKER_HOST)"
            )
        # An independent descriptor for asyncio; the SDK's response objects are closed here.
        sock = raw.dup()
        response = getattr(wrapped, "_response", None)
        if response is not None:
            response.close()  # closes the reader chain down to the SDK's socket wrapper, in order
        else:
            wrapped.close()
        raw.close()
        return sock

    async def remove(self, container_id: str) -> None:
        await self._in_thread(self._remove, container_id)

    def _remove(self, container_id: str) -> None:
        try:
            self._api().remove_container(container_id, force=True, v=True)
        except NotFound:
            pass
        except DockerException as exc:
            if "is already in progress" not in str(exc):
                raise

    async def managed(self) -> list[ContainerInfo]:
        """Every sandbox container of this manager's scope, running or not (never a build container)."""
        return await self._listing([f"{LABEL_MANAGED}=true", f"{LABEL_SCOPE}={self.scope}"])

    async def build_containers(self) -> list[ContainerInfo]:
        """Every build container of this manager's scope, running or not."""
        return await self._listing([f"{LABEL_BUILD_SCOPE}={self.scope}"])

    async def _listing(self, labels: list[str]) -> list[ContainerInfo]:
        def listing() -> list[ContainerInfo]:
            rows = self._api().containers(all=True, filters={"label": labels})
            return [
                ContainerInfo(
                    id=str(row["Id"]),
                    name=str((row.get("Names") or ["?"])[0]).lstrip("/"),
                    labels=dict(row.get("Labels") or {}),
                    running=row.get("State") == "running",
                    created=float(row.get("Created") or 0),
                    egress_directory=_egress_source(row),
                )
                for row in rows
            ]

        return await self._in_thread(listing)

    async def running(self, container_id: str) -> bool:
        def state() -> bool:
            try:
                info = self._api().inspect_container(container_id)
            except NotFound:
                return False
            return bool(info.get("State", {}).get("Running"))

        return await self._in_thread(state)

    async def aclose(self) -> None:
        """Wait for Docker calls in flight (a launch finishing now removes its container), then close."""
        self._closing.set()
        for build in list(self._builds):
            build.stop()
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(self._threads.shutdown, wait=True))
        for container_id in list(self._unclaimed):
            await asyncio.get_running_loop().run_in_executor(None, self._remove, container_id)
        self._unclaimed.clear()
        if self._client is not None:
            self._client.close()
            self._client = None


def _egress_source(row: dict[str, Any]) -> str | None:
    """The host directory a listed container has mounted at ``SANDBOX_EGRESS_DIR``, if any."""
    for mount in row.get("Mounts") or ():
        if mount.get("Destination") == SANDBOX_EGRESS_DIR:
            source = mount.get("Source")
            return str(source) if source else None
    return None
