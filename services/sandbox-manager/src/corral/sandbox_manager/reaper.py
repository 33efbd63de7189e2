"""Start-up reconciliation, the orphan reaper and the idle sweep.

At start-up (``reconcile``), every container of this manager's scope (``corral.managed=true``,
``corral.scope=<scope>``) is looked at once:

- not running: removed; if a session's record still pointed at it, the record says it was lost, so
  that session's next call carries a notice;
- running and the live container of a session (``container.<id>`` -> session, and that session's
  record names it; this is how a claimed pool container, whose labels name no session, maps back):
  reattached and serving that session again, with its workspace intact;
- running, pooled and unclaimed: put back into its pool when its spec is still wanted, else removed;
  one with network ``egress`` only when the socket directory it mounts is the one this manager's
  credential-proxy gives its slot (``Launcher.egress_is_ours``): a pooled sandbox left by a manager of
  another stack on a shared engine mounts that stack's credential-proxy's socket, and is removed;
- anything else: an orphan, removed.

Periodically (``reap_interval_s``), a container this manager does not hold in memory and that no
session's record names is removed, unless it is younger than ``orphan_grace_s`` (it may be starting).
For now a session is live while the manager's record of it exists; the session-store will later
publish releases (archive, delete, terminate), which arrive as ``release``.

Build containers of environment images (``corral.build.scope=<scope>``, never ``corral.managed``, so
none of the above ever sees one) are swept at start-up and with every orphan pass: one that no build
of this manager is running is removed and its build's egress closed (``EnvironmentImages.sweep``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from docker.errors import DockerException

from corral.sandbox_manager.container_spec import EGRESS, LABEL_EGRESS_SLOT, LABEL_NETWORK, LABEL_POOL, ContainerInfo
from corral.sandbox_manager.containers import Driver
from corral.sandbox_manager.images import EnvironmentImages
from corral.sandbox_manager.pool import Pool
from corral.sandbox_manager.records import SandboxRecords
from corral.sandbox_manager.sandboxes import Launcher
from corral.sandbox_manager.sessions import Sessions
from corral.sandbox_manager.settings import SandboxSettings

logger = logging.getLogger(__name__)

LOST_WHILE_DOWN = (
    "The previous sandbox of this session stopped while the sandbox-manager was down; this is a new sandbox, "
    "and files in /workspace were lost."
)


class Reaper:
    def __init__(
        self,
        driver: Driver,
        launcher: Launcher,
        sessions: Sessions,
        pool: Pool,
        records: SandboxRecords,
        settings: SandboxSettings,
        *,
        images: EnvironmentImages,
    ) -> None:
        self._driver = driver
        self._images = images
        self._launcher = launcher
        self._sessions = sessions
        self._pool = pool
        self._records = records
        self._settings = settings

    async def reconcile(self) -> dict[str, int]:
        """Take over what a previous run left (see the module docstring); counts by what was done."""
        counts = {"adopted": 0, "pooled": 0, "removed": 0, "builds_removed": await self._sweep_builds()}
        for info in await self._driver.managed():
            owner = await self._records.owner(info.id)
            if not info.running:
                await self._remove(info, "stopped")
                if owner is not None:
                    await self._records.unbind(owner, info.id, "lost", LOST_WHILE_DOWN)
                counts["removed"] += 1
                continue
            if owner is not None:
                try:
                    sandbox = await self._launcher.adopt(info, session_id=owner)
                except Exception:
                    logger.warning("could not reattach a session's sandbox", extra={"fields": {"container": info.name}})
                    await self._remove(info, "unreachable")
                    await self._records.unbind(owner, info.id, "lost", LOST_WHILE_DOWN)
                    counts["removed"] += 1
                    continue
                self._sessions.adopt(owner, sandbox)
                counts["adopted"] += 1
                continue
            if info.labels.get(LABEL_POOL) == "true":
                if info.labels.get(LABEL_NETWORK) == EGRESS and not await self._launcher.egress_is_ours(info):
                    await self._remove(info, "its egress socket is not this manager's credential-proxy's")
                    counts["removed"] += 1
                    continue
                try:
                    sandbox = await self._launcher.adopt(info, session_id=None)
                except Exception:
                    await self._remove(info, "unreachable")
                    counts["removed"] += 1
                    continue
                if self._pool.offer(sandbox):
                    counts["pooled"] += 1
                    continue
                await self._launcher.discard(sandbox, "not wanted in a pool")
                counts["removed"] += 1
                continue
            await self._remove(info, "orphan")
            counts["removed"] += 1
        self._sessions.reconciled()
        logger.info("reconciled containers", extra={"fields": counts})
        return counts

    async def reap_orphans(self) -> int:
        """Remove containers nobody owns (build containers included); how many."""
        removed = await self._sweep_builds()
        now = time.time()
        for info in await self._driver.managed():
            if self._sessions.knows(info.id) or self._pool.knows(info.id) or info.name in self._launcher.starting:
                continue
            if info.running and now - info.created < self._settings.orphan_grace_s:
                continue
            if info.running and await self._records.owner(info.id) is not None:
                continue
            await self._remove(info, "orphan")
            removed += 1
        return removed

    async def _sweep_builds(self) -> int:
        try:
            return await self._images.sweep()
        except (DockerException, OSError):
            logger.warning("could not look for leftover build containers", exc_info=True)
            return 0

    async def _remove(self, info: ContainerInfo, reason: str) -> None:
        try:
            await self._driver.remove(info.id)
        except (DockerException, OSError):
            logger.warning("could not remove a container", extra={"fields": {"container": info.name}}, exc_info=True)
            return
        logger.info("container removed", extra={"fields": {"container": info.name, "reason": reason}})
        await self._launcher.close_slot(info.labels.get(LABEL_EGRESS_SLOT))

    async def run(self) -> None:
        """Sweep idle sandboxes and reap orphans, forever."""
        tick = min(self._settings.idle_s / 4, self._settings.reap_interval_s, 30.0)
        next_reap = time.monotonic() + self._settings.reap_interval_s
        while True:
            await asyncio.sleep(tick)
            try:
                await self._sessions.sweep_idle()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + self._settings.reap_interval_s
                    await self.reap_orphans()
            except Exception:
                logger.warning("reaper pass failed; the next pass retries", exc_info=True)
