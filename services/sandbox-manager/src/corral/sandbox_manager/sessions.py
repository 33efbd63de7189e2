"""Which sandbox serves which session, provisioning lazily and at most once at a time per session.

A session gets a pooled sandbox when one is ready for its spec (a sandbox that may use the network
gets its pooled egress slot set to the session's policy at the claim), otherwise a cold one labelled
with its ids (and, with network, its session's own egress directory mounted). A session with vaults
and network always gets a cold one: its credentials' placeholders and egress CA are set in the
container's environment when it starts (``egress``). An environment that
lists packages first waits for its environment image (``images``), built at most once however many
sessions ask; the harness provisions at turn start, so the build
overlaps the model's first request. The binding is recorded (``records.SandboxRecords``) before the
sandbox is used. A sandbox that stops (its stream ends) or goes unused for ``idle_s`` is removed;
the session's next call gets a new one, and when nobody was told yet that the old one is gone, that
call carries a notice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

from docker.errors import DockerException

from corral import telemetry
from corral.contracts.egress import EgressPolicy
from corral.contracts.repositories import RepositoryFailure, RepositoryMount
from corral.sandbox_manager import metrics
from corral.sandbox_manager.channel import SandboxLost
from corral.sandbox_manager.container_spec import EGRESS, NO_NETWORK, ContainerSpec
from corral.sandbox_manager.egress import NO_EGRESS_NOTICE, Egress, EgressMount, EgressUnavailable, SessionVaults
from corral.sandbox_manager.engine import EngineWatch, SandboxUnavailable
from corral.sandbox_manager.environments import place
from corral.sandbox_manager.images import EnvironmentImages
from corral.sandbox_manager.pool import Pool
from corral.sandbox_manager.records import SandboxRecords, SessionState
from corral.sandbox_manager.repositories import RepositoryChecks, clone_all, with_repositories
from corral.sandbox_manager.sandboxes import Launcher, Sandbox
from corral.sandbox_manager.settings import SandboxSettings

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

LOST_WHILE_UNUSED = (
    "The previous sandbox of this session stopped unexpectedly; this is a new sandbox, and files in /workspace "
    "were lost."
)

HOST_LOST = (
    "The previous sandbox of this session was on sandbox host {host}, which stopped answering; this is a new "
    "sandbox on another host ({here}), and files in /workspace were lost."
)

REMOVED_WHILE_UNUSED = (
    "The previous sandbox of this session was removed because {violation} (the exec agent never does that: "
    "something in the sandbox wrote to its output); this is a new sandbox, and files in /workspace were lost."
)


@dataclass(frozen=True)
class Provisioning:
    sandbox: Sandbox
    #: Time spent getting the sandbox for this request (0 when the session already had one).
    ready_ms: float


class Sessions:
    def __init__(
        self,
        launcher: Launcher,
        pool: Pool,
        records: SandboxRecords,
        engine: EngineWatch,
        settings: SandboxSettings,
        *,
        images: EnvironmentImages,
        egress: Egress,
        repositories: RepositoryChecks,
    ) -> None:
        self._launcher = launcher
        self._pool = pool
        self._records = records
        self._engine = engine
        self._settings = settings
        self._images = images
        self._egress = egress
        self._repositories = repositories
        self._live: dict[str, Sandbox] = {}
        self._pending: dict[str, asyncio.Task[Sandbox]] = {}
        self._chores: set[asyncio.Task[None]] = set()
        #: Why a session's sandbox went away, for its next sandbox's notice (the record says the same
        #: for a restarted manager; this is here at once, before the record is written).
        self._farewells: dict[str, str] = {}
        #: Set once start-up reconciliation has adopted what a previous run left (``reconciled``).
        self._reconciled = asyncio.Event()

    # --- lookups ---------------------------------------------------------------------------------------
    def get(self, session_id: str) -> Sandbox | None:
        sandbox = self._live.get(session_id)
        return sandbox if sandbox is not None and sandbox.alive else None

    def knows(self, container_id: str) -> bool:
        return any(s.container_id == container_id for s in self._live.values())

    def count(self) -> int:
        return len(self._live)

    # --- provisioning -----------------------------------------------------------------------------------
    async def ensure(
        self,
        session_id: str,
        environment_id: str,
        config: dict[str, Any],
        repositories: list[RepositoryMount] | None = None,
        *,
        vaults: SessionVaults | None = None,
    ) -> Provisioning:
        """The session's sandbox, provisioned now if it has none.

        Raises:
            SandboxUnavailable: no sandbox can be started (no engine, no image, the engine failed).
            UnsupportedEnvironment: the environment does not run tools here.
            PackagesNotInstalled: the environment's packages are invalid or could not be installed.
        """
        began = time.perf_counter()
        if not self._reconciled.is_set():
            # A call re-sent at once to a restarted manager must find the session's running sandbox
            # (its workspace, its shell) adopted, not get a new one next to it: wait for the adoption.
            await self._engine.available()  # no engine: say so now (nothing gets reconciled without one)
            await self._reconciled.wait()
        # A provisioning still going (its sandbox may be adopted already while its repositories are
        # cloned) is waited for: a call must never run in a sandbox that is not finished.
        task = self._pending.get(session_id)
        if task is None:
            existing = self.get(session_id)
            if existing is not None:
                return Provisioning(existing, 0.0)
            task = asyncio.get_running_loop().create_task(
                self._provision(session_id, environment_id, config, repositories or [], vaults),
                name=f"provision:{session_id}",
            )
            self._pending[session_id] = task
            task.add_done_callback(lambda t: self._forget_pending(session_id, t))
        sandbox = await asyncio.shield(task)
        return Provisioning(sandbox, (time.perf_counter() - began) * 1000)

    def _forget_pending(self, session_id: str, task: asyncio.Task[Sandbox]) -> None:
        if self._pending.get(session_id) is task:
            del self._pending[session_id]
        if not task.cancelled():
            task.exception()  # retrieved here; the awaiting callers get it too

    async def _provision(
        self,
        session_id: str,
        environment_id: str,
        config: dict[str, Any],
        repositories: list[RepositoryMount],
        vaults: SessionVaults | None,
    ) -> Sandbox:
        attributes = {"corral.session_id": session_id, "corral.environment_id": environment_id}
        with _tracer.start_as_current_span("provision sandbox", attributes=attributes) as span:
            sandbox = await self._provision_sandbox(session_id, environment_id, config, repositories, vaults)
            span.set_attribute("corral.sandbox_source", "warm" if sandbox.from_pool else "cold")
            span.set_attribute("corral.sandbox_network", sandbox.network)
            return sandbox

    async def _provision_sandbox(
        self,
        session_id: str,
        environment_id: str,
        config: dict[str, Any],
        repositories: list[RepositoryMount],
        vaults: SessionVaults | None,
    ) -> Sandbox:
        began = time.perf_counter()
        await self._engine.available()
        placement = place(self._settings, config, trusted_ca=self._images.trusted_ca)
        if repositories:
            egress = with_repositories(placement.egress, repositories)
            placement = replace(placement, egress=egress, spec=replace(placement.spec, network=EGRESS))
        if vaults is not None and placement.egress is not None:
            # Its credentials' placeholders and CA go into the container's environment when it starts, so
            # a session with vaults never takes a pooled sandbox (started before it had any).
            placement = replace(placement, egress=vaults.policy(placement.egress))
        spec, notices = placement.spec, list(placement.notices)
        if placement.image is not None:
            # Before the pool is asked: taking from it makes it keep containers of this image.
            try:
                await self._images.ensure(placement.image)
            except (DockerException, OSError) as exc:
                self._engine.suspect()
                logger.warning(
                    "could not build an environment image",
                    extra={"fields": {"session_id": session_id, "tag": placement.image.tag}},
                    exc_info=True,
                )
                raise SandboxUnavailable(f"the environment's image could not be built: {exc}") from exc
        previous, revision = await self._records.session_entry(session_id)
        sandbox = None if vaults is not None else await self._claim(session_id, spec, placement.egress)
        mount: EgressMount | None = None
        if sandbox is None and placement.egress is not None:
            try:
                mount = await self._egress.open(session_id, placement.egress)
            except EgressUnavailable as exc:
                logger.warning(
                    "no egress for a sandbox that may use the network: %s",
                    exc,
                    extra={"fields": {"session_id": session_id}},
                )
                spec = replace(spec, network=NO_NETWORK)
                notices.append(NO_EGRESS_NOTICE.format(why=exc))
                sandbox = self._pool.take(spec)
        if sandbox is None:
            try:
                sandbox = await self._launcher.start(
                    spec, session_id=session_id, environment_id=environment_id, egress=mount
                )
            except (DockerException, OSError, SandboxLost, TimeoutError) as exc:
                self._engine.suspect()
                logger.warning("could not start a sandbox", extra={"fields": {"session_id": session_id}}, exc_info=True)
                raise SandboxUnavailable(f"the sandbox could not be started: {exc}") from exc
        sandbox.session_id = session_id
        sandbox.notices = notices
        farewell = self._farewells.pop(session_id, None)
        if farewell is None and previous is not None and previous.state in ("lost", "idle") and previous.reason:
            farewell = previous.reason
        here = self._settings.host_id
        if farewell is None and previous is not None and previous.state == "live" and previous.host not in (None, here):
            # the session was moved here because its host stopped answering: its sandbox went with it
            farewell = HOST_LOST.format(host=previous.host, here=here)
        if farewell:
            sandbox.notices.insert(0, farewell)
        sandbox.touch()
        self.adopt(session_id, sandbox)  # before the records, so the reaper never sees it unowned
        try:
            await self._records.bind(session_id, sandbox.container_id, environment_id, last=revision, host=here)
        except BaseException:
            if self._live.get(session_id) is sandbox:
                del self._live[session_id]
            self._chore(self._launcher.discard(sandbox, "could not record its session"))
            raise
        source = "warm" if sandbox.from_pool else "cold"
        metrics.PROVISION_DURATION.labels(source=source).observe(time.perf_counter() - began)
        if repositories and sandbox.network != EGRESS:  # its egress proxy could not be opened
            sandbox.repository_failures = [
                RepositoryFailure(
                    resource_id=r.resource_id,
                    url=r.url,
                    type="repository_clone_error",
                    message="this sandbox has no egress proxy to reach the repository through",
                )
                for r in repositories
            ]
        elif repositories:
            sandbox.repository_failures = await clone_all(
                sandbox, repositories, self._repositories, timeout_s=self._settings.clone_timeout_s
            )
        return sandbox

    async def _claim(self, session_id: str, spec: ContainerSpec, policy: EgressPolicy | None) -> Sandbox | None:
        """A pooled sandbox for ``spec``, with its egress slot given the session's ``policy`` when it
        may use the network; ``None`` when the pool has none (or its slot could not be given the policy)."""
        sandbox = self._pool.take(spec)
        if sandbox is None or policy is None:
            return sandbox
        try:
            await self._launcher.attach_egress(sandbox, policy)
        except EgressUnavailable as exc:
            logger.warning(
                "could not give a pooled sandbox's egress this session's policy; starting one for it",
                extra={"fields": {"session_id": session_id, "container": sandbox.name, "error": str(exc)[:300]}},
            )
            self._chore(self._launcher.discard(sandbox, "its egress slot could not take the session's policy"))
            return None
        return sandbox

    def reconciled(self) -> None:
        """Start-up reconciliation is over: sandboxes a previous run left serve their sessions again."""
        self._reconciled.set()

    def adopt(self, session_id: str, sandbox: Sandbox) -> None:
        """Serve ``session_id`` with ``sandbox`` (provisioned now, or found running at start-up)."""
        sandbox.session_id = session_id
        sandbox.channel.session_id = session_id
        self._live[session_id] = sandbox
        sandbox.channel.on_lost(lambda: self._on_lost(session_id, sandbox))

    # --- endings ----------------------------------------------------------------------------------------
    def _on_lost(self, session_id: str, sandbox: Sandbox) -> None:
        if self._live.get(session_id) is not sandbox:
            return  # removed on purpose
        del self._live[session_id]
        # A call in flight tells the model itself; otherwise the next call carries the notice.
        violation = sandbox.channel.violation
        if sandbox.inflight:
            reason = None
        elif violation is not None:
            reason = REMOVED_WHILE_UNUSED.format(violation=violation)
        else:
            reason = LOST_WHILE_UNUSED
        if reason:
            self._farewells[session_id] = reason
        logger.warning(
            "sandbox stopped unexpectedly",
            extra={
                "fields": {
                    "session_id": session_id,
                    "container": sandbox.name,
                    "inflight": sandbox.inflight,
                    "violation": violation,
                }
            },
        )
        self._chore(self._end(session_id, sandbox, "lost", reason))

    async def retire(self, session_id: str, sandbox: Sandbox, state: SessionState, reason: str | None) -> None:
        """Remove the session's sandbox now (idle, unresponsive)."""
        if self._live.get(session_id) is sandbox:
            del self._live[session_id]
            if reason:
                self._farewells[session_id] = reason
        await self._end(session_id, sandbox, state, reason)

    async def _end(self, session_id: str, sandbox: Sandbox, state: SessionState, reason: str | None) -> None:
        try:
            await self._records.unbind(session_id, sandbox.container_id, state, reason or "")
        except Exception:
            logger.warning("could not update a session's sandbox record", exc_info=True)
        await self._launcher.discard(sandbox, state)

    async def release(self, session_id: str) -> str | None:
        """Remove the session's sandbox for good; the removed container's id, if it had one."""
        pending = self._pending.get(session_id)
        if pending is not None:
            await asyncio.wait([pending])
        sandbox = self._live.pop(session_id, None)
        self._farewells.pop(session_id, None)
        record = await self._records.session(session_id)
        if sandbox is not None:
            await self._launcher.discard(sandbox, "released")
            await self._records.unbind(session_id, sandbox.container_id, "released", "")
        elif record is not None and record.container_id:
            await self._launcher.driver.remove(record.container_id)
            await self._records.unbind(session_id, record.container_id, "released", "")
        await self._records.forget(session_id)
        await self._egress.close(session_id)
        if sandbox is not None:
            return sandbox.container_id
        return record.container_id if record is not None else None

    async def sweep_idle(self) -> int:
        """Remove sandboxes unused for ``idle_s``; how many."""
        cutoff = time.monotonic() - self._settings.idle_s
        idle = [(sid, s) for sid, s in self._live.items() if s.inflight == 0 and s.last_used < cutoff]
        for session_id, sandbox in idle:
            reason = (
                f"The previous sandbox of this session was removed after {self._settings.idle_s:g} s without tool "
                "calls; this is a new sandbox, and files in /workspace were lost."
            )
            await self.retire(session_id, sandbox, "idle", reason)
        return len(idle)

    def _chore(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def close(self) -> None:
        """Stop watching (containers keep running: a restart reattaches to them)."""
        for task in list(self._pending.values()):
            task.cancel()
        if self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)
        for sandbox in self._live.values():
            await sandbox.channel.detach()
        self._live.clear()
