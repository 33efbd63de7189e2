"""Whether the Docker engine answers and has the sandbox image; watched for the life of the service.

Without either the service stays up, reports ``degraded`` health with what to do, and answers
``provision``/``execute`` with a ``sandbox_unavailable`` error until both are there. A call that
finds the last check failed waits for one fresh check first (``available``): a slow engine's first
answer (a probe timed out while dockerd was busy starting) must not refuse every call until the next
retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from docker.errors import DockerException

from corral.sandbox_manager.containers import Driver

logger = logging.getLogger(__name__)

_RECHECK_READY_S = 30.0


@dataclass(frozen=True)
class EngineStatus:
    ok: bool
    version: str | None
    image: str
    image_present: bool
    message: str


class SandboxUnavailable(Exception):
    """No sandbox can be started right now; the message says why and what to do."""


class EngineWatch:
    def __init__(self, driver: Driver, image: str, *, probe_timeout_s: float, retry_s: float) -> None:
        self._driver = driver
        self._image = image
        self._probe_timeout_s = probe_timeout_s
        self._retry_s = retry_s
        self.ready = asyncio.Event()
        #: Set once the engine and image were first looked for: until then, nothing is known to answer with.
        self.checked = asyncio.Event()
        self.status = EngineStatus(ok=False, version=None, image=image, image_present=False, message="not checked yet")
        self._recheck = asyncio.Event()
        #: Set (and replaced) each time a check completes: what ``available`` waits for.
        self._check_done = asyncio.Event()

    async def check(self) -> EngineStatus:
        version = await self._driver.version(self._probe_timeout_s)
        if version is None:
            status = EngineStatus(
                ok=False,
                version=None,
                image=self._image,
                image_present=False,
                message=f"no Docker engine answers at {self._driver.where()}; start dockerd or set CORRAL_DOCKER_HOST",
            )
        else:
            try:
                present = await self._driver.has_image(self._image)
            except (DockerException, OSError) as exc:
                present = False
                logger.warning("engine check failed", extra={"fields": {"error": str(exc)}})
            message = (
                "ready"
                if present
                else f"the sandbox image {self._image!r} is not on the engine; build it (make up builds it) "
                "or set CORRAL_SANDBOX_IMAGE to an image that exists"
            )
            status = EngineStatus(
                ok=present,
                version=version,
                image=self._image,
                image_present=present,
                message=message,
            )
        if status.ok != self.status.ok or status.message != self.status.message:
            level = logging.INFO if status.ok else logging.WARNING
            logger.log(level, "docker engine: %s", status.message, extra={"fields": {"version": version}})
        self.status = status
        if status.ok:
            self.ready.set()
        else:
            self.ready.clear()
        self.checked.set()
        done, self._check_done = self._check_done, asyncio.Event()
        done.set()
        return status

    async def available(self) -> EngineStatus:
        """The current status when sandboxes can be started; when the last check found they cannot,
        after one fresh check (bounded by the probe's timeout), so a call is refused only on news.

        Raises:
            SandboxUnavailable: they cannot (the message says why).
        """
        if not self.status.ok:
            done = self._check_done
            self._recheck.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * self._probe_timeout_s + 1.0):
                    await done.wait()
        return self.require()

    def require(self) -> EngineStatus:
        """The current status when sandboxes can be started.

        Raises:
            SandboxUnavailable: they cannot (the message says why).
        """
        if not self.status.ok:
            self._recheck.set()
            raise SandboxUnavailable(self.status.message)
        return self.status

    def suspect(self) -> None:
        """A Docker call failed: check again now."""
        self._recheck.set()

    async def run(self) -> None:
        while True:
            await self.check()
            self._recheck.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RECHECK_READY_S if self.status.ok else self._retry_s):
                    await self._recheck.wait()
