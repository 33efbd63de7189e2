"""A running sandbox (a container with its exec agent attached), and how one is started or adopted.

A pooled sandbox for a spec with network ``egress`` is started with an egress *slot* of its own: a
grant named ``pool-<hex>`` that the credential-proxy opens with a policy allowing nothing, whose
directory (holding only that slot's proxy socket) is mounted into the container. Claiming the sandbox
gives the slot the session's policy (``attach_egress``); the slot is closed with the container.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from docker.errors import DockerException

from corral.contracts.egress import EgressPolicy
from corral.contracts.repositories import RepositoryFailure
from corral.sandbox_manager.channel import AgentChannel
from corral.sandbox_manager.channel_limits import ChannelLimits
from corral.sandbox_manager.container_spec import (
    EGRESS,
    LABEL_CONFIG,
    LABEL_EGRESS_SLOT,
    LABEL_NETWORK,
    ContainerInfo,
    ContainerSpec,
)
from corral.sandbox_manager.containers import Driver
from corral.sandbox_manager.egress import Egress, EgressMount, EgressUnavailable

logger = logging.getLogger(__name__)

#: What an unclaimed pooled sandbox's egress slot allows: nothing (no session owns it yet).
SLOT_POLICY = EgressPolicy(allowed_hosts=[], allow_package_managers=False)


@dataclass(eq=False)
class Sandbox:
    container_id: str
    name: str
    spec_hash: str
    channel: AgentChannel
    ready_ms: float
    from_pool: bool = False
    session_id: str | None = None
    network: str = "none"
    #: The egress slot of a sandbox started for the pool with network ``egress`` (see the module doc).
    egress_slot: str | None = None
    #: Said once, with the first tool outcome from this sandbox (what the environment could not have).
    notices: list[str] = field(default_factory=list)
    #: Repositories that could not be cloned into it: said once, with the first tool outcome.
    repository_failures: list[RepositoryFailure] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)
    inflight: int = 0

    @property
    def alive(self) -> bool:
        return not self.channel.closed

    def touch(self) -> None:
        self.last_used = time.monotonic()


class Launcher:
    def __init__(
        self,
        driver: Driver,
        *,
        start_timeout_s: float,
        limits: ChannelLimits | None = None,
        egress: Egress | None = None,
    ) -> None:
        self.driver = driver
        self.egress = egress
        self.limits = limits or ChannelLimits()
        self.start_timeout_s = start_timeout_s
        #: Names of containers being started right now (the reaper leaves them alone).
        self.starting: set[str] = set()

    async def start(
        self,
        spec: ContainerSpec,
        *,
        session_id: str | None = None,
        environment_id: str | None = None,
        egress: EgressMount | None = None,
        egress_slot: str | None = None,
    ) -> Sandbox:
        """Create, start and wait for the agent's first answer (``egress``: see ``Driver.launch``;
        ``egress_slot``: the pool slot ``egress`` belongs to, labelled on the container).

        Raises:
            DockerException, OSError: the engine refused or failed.
            SandboxLost, TimeoutError: the agent never answered (the container is removed).
        """
        began = time.perf_counter()
        name = f"corral-sbx-{self.driver.scope}-{secrets.token_hex(6)}"
        labels = self.driver.labels(spec, session_id=session_id, environment_id=environment_id)
        if egress_slot is not None:
            labels[LABEL_EGRESS_SLOT] = egress_slot
        self.starting.add(name)
        try:
            container_id, sock = await self.driver.launch(spec, name, labels, egress=egress)
            opened: AgentChannel | None = None
            try:
                channel = opened = await AgentChannel.open(name, sock, self.limits)
                answer = await channel.ping(self.start_timeout_s)
            except BaseException:
                # the attach stream goes with the container: never left for the garbage collector
                if opened is not None:
                    await opened.close()
                else:
                    sock.close()
                try:
                    await self.driver.remove(container_id)
                except Exception:
                    logger.warning(
                        "could not remove a sandbox whose exec agent never answered; the reaper will retry",
                        extra={"fields": {"container": name, "session_id": session_id}},
                        exc_info=True,
                    )
                raise
        finally:
            self.starting.discard(name)
        ready_ms = (time.perf_counter() - began) * 1000
        if not answer.get("sealed"):
            logger.warning(
                "the exec agent could not make itself non-dumpable (no ctypes in the sandbox image?): tools "
                "can write to its output through /proc; the manager's read bounds still hold",
                extra={"fields": {"container": name, "image": spec.image}},
            )
        logger.info(
            "sandbox started",
            extra={"fields": {"container": name, "ready_ms": round(ready_ms, 1), "pool": session_id is None}},
        )
        return Sandbox(
            container_id=container_id,
            name=name,
            spec_hash=spec.hash,
            channel=channel,
            ready_ms=ready_ms,
            session_id=session_id,
            network=spec.network,
            egress_slot=egress_slot,
        )

    async def start_pooled(self, spec: ContainerSpec) -> Sandbox:
        """A sandbox for the warm pool: no session; with network ``egress``, an egress slot of its own.

        Raises:
            EgressUnavailable: ``egress`` was asked for and the credential-proxy did not open a slot.
            DockerException, OSError, SandboxLost, TimeoutError: as ``start``.
        """
        if spec.network != EGRESS:
            return await self.start(spec)
        if self.egress is None:
            raise EgressUnavailable("this manager has no egress client")
        slot = f"pool-{secrets.token_hex(8)}"
        mount = await self.egress.open(slot, SLOT_POLICY)
        try:
            return await self.start(spec, egress=mount, egress_slot=slot)
        except BaseException:
            await self.close_slot(slot)
            raise

    async def attach_egress(self, sandbox: Sandbox, policy: EgressPolicy) -> None:
        """Give a claimed pooled sandbox's egress slot its session's ``policy`` (from the next
        connection on; nothing in the sandbox has connected before the claim).

        Raises:
            EgressUnavailable: the sandbox has no slot, or the credential-proxy did not apply it.
        """
        if sandbox.egress_slot is None or self.egress is None:
            raise EgressUnavailable("the pooled sandbox has no egress slot")
        await self.egress.open(sandbox.egress_slot, policy)

    async def egress_is_ours(self, info: ContainerInfo) -> bool:
        """Whether a pooled container found at start-up has its slot's socket directory as this
        manager's credential-proxy makes it (re-opened now, with nothing allowed). One started by a
        manager that used another credential-proxy (another stack on a shared engine) mounts that
        proxy's directory: claimed, its sandbox would reach a socket nobody here serves, so it must
        not be adopted."""
        slot = info.labels.get(LABEL_EGRESS_SLOT)
        if slot is None or self.egress is None or info.egress_directory is None:
            return False
        try:
            mount = await self.egress.open(slot, SLOT_POLICY)
        except EgressUnavailable as exc:
            logger.warning("a pooled sandbox's egress could not be checked: %s", exc, extra={"fields": {"slot": slot}})
            return False
        return PurePosixPath(mount.host_directory) == PurePosixPath(info.egress_directory)

    async def close_slot(self, slot: str | None) -> None:
        """Close a pooled sandbox's egress slot (its container is gone); failures are logged."""
        if slot is not None and self.egress is not None:
            await self.egress.close(slot)

    async def adopt(self, info: ContainerInfo, *, session_id: str | None) -> Sandbox:
        """Reattach to a running container found at start-up.

        Raises:
            DockerException, OSError, SandboxLost, TimeoutError: it cannot be used (the caller removes it).
        """
        sock = await self.driver.attach(info.id)
        try:
            channel = await AgentChannel.open(info.name, sock, self.limits)
        except BaseException:
            sock.close()
            raise
        try:
            await channel.ping(5.0)
            # Calls sent by the previous manager can never be answered to anyone (their records say
            # "started", so a re-dispatch is told they were interrupted): stop them, freeing the shell.
            await channel.cancel("*")
        except BaseException:
            await channel.close()
            raise
        return Sandbox(
            container_id=info.id,
            name=info.name,
            spec_hash=info.labels.get(LABEL_CONFIG, ""),
            channel=channel,
            ready_ms=0.0,
            session_id=session_id,
            network=info.labels.get(LABEL_NETWORK, "none"),
            egress_slot=info.labels.get(LABEL_EGRESS_SLOT),
        )

    async def discard(self, sandbox: Sandbox, reason: str) -> None:
        """Close the stream and remove the container, then its egress slot (errors are logged, not raised)."""
        await sandbox.channel.close()
        try:
            await self.driver.remove(sandbox.container_id)
        except (DockerException, OSError):
            logger.warning(
                "could not remove a sandbox container; the reaper will retry",
                extra={"fields": {"container": sandbox.name, "reason": reason}},
                exc_info=True,
            )
            return
        logger.info("sandbox removed", extra={"fields": {"container": sandbox.name, "reason": reason}})
        await self.close_slot(sandbox.egress_slot)
