"""Environment images: the sandbox image plus an environment's ``packages``, built once per content.

An environment that lists packages runs in ``corral-env:<hash>``, where ``<hash>`` is the first 12
hex of a sha256 over ``BUILD_FORMAT`` (how images are made), the base image tag, the packages as
canonical JSON (managers sorted, each manager's entries in the order given), the generated build
script (``packages.build_script``) and the extra CA certificates builds trust
(``CORRAL_SANDBOX_ENVIRONMENT_CA_FILE``, if set). The same packages on the same base always name the
same image, and a change to any of them (or to how packages are installed) names a new one. An
environment without packages runs in the base image itself.

``EnvironmentImages.ensure`` makes sure the engine has the image: a tag the engine already has is
used as it is (the engine's image store is the cache, across restarts); concurrent requests for a
tag share one build. A build (``builds``) is a hardened container from the base image with network
``none`` whose only way out is an egress proxy the credential-proxy opens for that build alone
(``build-<hex>`` in place of a session id; the package registries only, public addresses only),
closed when the build ends. No egress, no build: the failure says what to set. A build that fails or
outlasts ``environment_build_timeout_s`` raises ``ImageBuildFailed`` with the failing step and the
last lines of output, and that failure is answered again, without a new build, for
``environment_build_retry_s``. Every line a build prints is logged at INFO with its tag. Images
carry the labels ``corral.image=environment``, ``corral.image.base`` and ``corral.image.packages``;
nothing removes them (``docker image prune -a --filter label=corral.image=environment`` does, for
images no container uses).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final, Protocol

from docker.errors import DockerException

from corral.contracts.egress import SESSION_ID_PATTERN, EgressPolicy
from corral.sandbox_manager.builds import LABEL_BUILD_ID, BuildError, BuildJob, BuildLimits, BuildStopped
from corral.sandbox_manager.container_spec import ContainerInfo
from corral.sandbox_manager.egress import Egress, EgressMount, EgressUnavailable
from corral.sandbox_manager.engine import SandboxUnavailable
from corral.sandbox_manager.packages import (
    TRUSTED_CA_PATH,
    BuildScript,
    Packages,
    PackagesNotInstalled,
    build_script,
)

logger = logging.getLogger(__name__)

IMAGE_REPOSITORY: Final = "corral-env"
LABEL_IMAGE: Final = "corral.image"
LABEL_IMAGE_BASE: Final = "corral.image.base"
LABEL_IMAGE_PACKAGES: Final = "corral.image.packages"
#: How environment images are made; part of every tag, so a change of method never reuses an image
#: made the old way (1: ``docker build`` with network host; 2: a build container behind the egress
#: proxy, committed).
BUILD_FORMAT: Final = "corral-env/2"
#: What a build may reach through its egress proxy: the public package registries, nothing else
#: (plus ``CORRAL_SANDBOX_ENVIRONMENT_BUILD_HOSTS``).
BUILD_EGRESS: Final = EgressPolicy(allowed_hosts=[], allow_package_managers=True)
#: Lines of build output a failure carries.
TAIL_LINES: Final = 20


@dataclass(frozen=True)
class EnvironmentImage:
    """What to build: ``packages`` on top of ``base``, trusting ``trusted_ca`` (PEM) while building."""

    base: str
    packages: Packages
    trusted_ca: bytes | None = None

    @functools.cached_property
    def script(self) -> BuildScript:
        return build_script(self.packages, trusted_ca=self.trusted_ca is not None)

    @property
    def files(self) -> dict[str, bytes]:
        """Files put into the build container before it starts."""
        return {TRUSTED_CA_PATH: self.trusted_ca} if self.trusted_ca is not None else {}

    @functools.cached_property
    def tag(self) -> str:
        digest = hashlib.sha256()
        for part in (BUILD_FORMAT, self.base, self.packages.canonical(), self.script.text):
            digest.update(part.encode() + b"\0")
        digest.update(self.trusted_ca or b"")
        return f"{IMAGE_REPOSITORY}:{digest.hexdigest()[:12]}"

    @property
    def build_id(self) -> str:
        """What the build's egress grant and container are named by (``build-<the tag's hex>``)."""
        return f"build-{self.tag.rpartition(':')[2]}"

    @property
    def labels(self) -> dict[str, str]:
        return {
            LABEL_IMAGE: "environment",
            LABEL_IMAGE_BASE: self.base,
            LABEL_IMAGE_PACKAGES: self.packages.canonical(),
        }


def environment_image(base: str, packages: Packages, trusted_ca: bytes | None = None) -> EnvironmentImage | None:
    """The image an environment with ``packages`` runs in; ``None``: the base image as it is."""
    return EnvironmentImage(base, packages, trusted_ca) if packages else None


def read_trusted_ca(path: str) -> bytes | None:
    """The PEM certificates at ``path`` (``CORRAL_SANDBOX_ENVIRONMENT_CA_FILE``; empty: none), read
    once at start-up.

    Raises:
        ValueError: the file holds no PEM certificate.
        OSError: it cannot be read.
    """
    if not path:
        return None
    data = Path(path).read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError(
            f"CORRAL_SANDBOX_ENVIRONMENT_CA_FILE={path} holds no PEM certificate (-----BEGIN CERTIFICATE-----); "
            "point it at a PEM bundle, such as the host's /etc/ssl/certs/ca-certificates.crt, or unset it"
        )
    return data


class ImageBuildFailed(PackagesNotInstalled):
    """The environment image could not be built (a step failed, or the build took too long)."""

    #: Whether the failure is answered again for ``environment_build_retry_s`` without a new build.
    lasting: ClassVar[bool] = True


class NoBuildEgress(ImageBuildFailed):
    """No egress proxy could be opened for the build (a deployment matter: asked again next time)."""

    lasting: ClassVar[bool] = False


class ImageDriver(Protocol):
    """What ``EnvironmentImages`` needs of the engine (``containers.Driver``)."""

    @property
    def scope(self) -> str: ...

    async def image_id(self, ref: str) -> str | None: ...

    async def run_build(self, job: BuildJob, *, timeout_s: float, on_line: Callable[[str], None]) -> str: ...

    async def build_containers(self) -> list[ContainerInfo]: ...

    async def remove(self, container_id: str) -> None: ...


@dataclass(frozen=True)
class _Failure:
    reason: str
    at: float


class _Output:
    """What a build printed: the last ``TAIL_LINES`` lines and the step it is at."""

    def __init__(self, image: EnvironmentImage) -> None:
        self._image = image
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.step: int | None = None

    def see(self, line: str) -> None:
        """Called from the build's thread with each line."""
        logger.info("environment image build: %s", line, extra={"fields": {"tag": self._image.tag}})
        step = self._image.script.step_of(line)
        if step is not None:
            self.step = step
        self.tail.append(line)

    def failing_step(self) -> str:
        """The step the build is at, in words (``installing the apt packages (jq)``)."""
        if self.step is None:
            return "starting the build"
        return self._image.script.steps[self.step]


class EnvironmentImages:
    def __init__(
        self,
        driver: ImageDriver,
        egress: Egress,
        *,
        limits: BuildLimits,
        timeout_s: float,
        failure_memory_s: float,
        trusted_ca: bytes | None = None,
        builds_enabled: bool = True,
        build_egress: EgressPolicy = BUILD_EGRESS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Extra CA certificates (PEM) every build trusts; part of each image's tag.
        self.trusted_ca = trusted_ca
        self._builds_enabled = builds_enabled
        self._driver = driver
        self._egress = egress
        self._build_egress = build_egress
        self._limits = limits
        self._timeout_s = timeout_s
        self._failure_memory_s = failure_memory_s
        self._clock = clock
        self._building: dict[str, asyncio.Task[str]] = {}
        self._failures: dict[str, _Failure] = {}
        #: Build ids whose container may exist now (``sweep`` leaves those alone).
        self._active: set[str] = set()

    async def ensure(self, image: EnvironmentImage) -> str:
        """The id of ``image`` on the engine: found there, from a build in progress, or built now.

        Raises:
            ImageBuildFailed: the build failed now, or failed less than ``failure_memory_s`` ago;
                ``NoBuildEgress`` when no egress proxy could be opened for it.
            SandboxUnavailable: the build was stopped (the manager is stopping).
            DockerException, OSError: the engine could not be asked or broke off the build.
        """
        tag = image.tag
        failure = self._failures.get(tag)
        if failure is not None:
            age = self._clock() - failure.at
            if age < self._failure_memory_s:
                raise ImageBuildFailed(
                    f"{failure.reason} (this build failed {age:.0f} s ago; the same packages are built again "
                    f"{self._failure_memory_s - age:.0f} s from now)"
                )
            del self._failures[tag]
        task = self._building.get(tag)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._obtain(image), name=f"image:{tag}")
            self._building[tag] = task
            task.add_done_callback(functools.partial(self._settle, tag))
        return await asyncio.shield(task)

    def _settle(self, tag: str, task: asyncio.Task[str]) -> None:
        if self._building.get(tag) is task:
            del self._building[tag]
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here; the callers awaiting it get it too
        if isinstance(exc, ImageBuildFailed) and exc.lasting:
            self._failures[tag] = _Failure(reason=exc.reason, at=self._clock())

    async def _obtain(self, image: EnvironmentImage) -> str:
        existing = await self._driver.image_id(image.tag)
        if existing is not None:
            return existing
        if not self._builds_enabled:
            raise ImageBuildFailed(
                "this deployment does not build environment images (CORRAL_SANDBOX_ENVIRONMENT_BUILDS is off), so "
                "the packages this environment lists cannot be installed; ask the operator, or remove the packages "
                "and install what you need with bash if the environment's network allows it"
            )
        self._active.add(image.build_id)
        try:
            mount = await self._open_egress(image)
            try:
                return await self._build(image, mount)
            finally:
                await self._close_egress(image.build_id)
        finally:
            self._active.discard(image.build_id)

    async def _open_egress(self, image: EnvironmentImage) -> EgressMount:
        try:
            return await self._egress.open(image.build_id, self._build_egress)
        except EgressUnavailable as exc:
            logger.warning("no egress for an environment image build: %s", exc, extra={"fields": {"tag": image.tag}})
            raise NoBuildEgress(
                "environment images are built in a container whose only way to the package registries is an "
                f"egress proxy of the credential-proxy, and none could be opened for this build ({exc}). The "
                "operator must run the credential-proxy with CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR set "
                "(make up does), or set "
                "CORRAL_SANDBOX_ENVIRONMENT_BUILDS=off so that environments with packages are refused at once"
            ) from None

    async def _close_egress(self, build_id: str) -> None:
        try:
            await self._egress.close(build_id)
        except Exception:  # the build's outcome stands; the grant is closed by the next build of the tag
            logger.warning("could not close a build's egress", extra={"fields": {"build": build_id}}, exc_info=True)

    def _job(self, image: EnvironmentImage, mount: EgressMount) -> BuildJob:
        scope = self._driver.scope
        return BuildJob(
            build_id=image.build_id,
            name=f"corral-build-{scope}-{image.tag.rpartition(':')[2]}",
            scope=scope,
            base=image.base,
            tag=image.tag,
            script=image.script.text,
            egress=mount,
            limits=self._limits,
            image_labels=image.labels,
            files=image.files,
        )

    async def _build(self, image: EnvironmentImage, mount: EgressMount) -> str:
        output = _Output(image)
        fields = {"tag": image.tag, "base": image.base, "packages": image.packages.summary()}
        logger.info("building an environment image", extra={"fields": fields})
        began = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                image_id = await self._driver.run_build(
                    self._job(image, mount), timeout_s=self._timeout_s, on_line=output.see
                )
        except BuildError as exc:
            code = exc.exit_code
            if code is None or exc.out_of_memory:  # not a step's own failure: the reason says what
                raise self._failed(image, output, f"{output.failing_step()} failed", str(exc)) from None
            failed = f"{output.failing_step()} failed with exit code {code}"
            raise self._failed(image, output, failed, None) from None
        except TimeoutError:
            failed = (
                f"the build took longer than {self._timeout_s:g} s (CORRAL_SANDBOX_ENVIRONMENT_BUILD_TIMEOUT_S) "
                f"and was stopped while {output.failing_step()}"
            )
            raise self._failed(image, output, failed, None) from None
        except BuildStopped:
            raise SandboxUnavailable("the sandbox-manager is stopping; retry the call once it is back") from None
        seconds = time.monotonic() - began
        logger.info("environment image built", extra={"fields": {**fields, "seconds": round(seconds, 1)}})
        return image_id

    def _failed(self, image: EnvironmentImage, output: _Output, what: str, reason: str | None) -> ImageBuildFailed:
        lines = list(output.tail)
        if reason and reason not in lines:
            lines.append(reason)
        logger.warning(
            "environment image build failed: %s", what, extra={"fields": {"tag": image.tag, "last_lines": lines}}
        )
        last = "\n".join(lines) or "(no output)"
        return ImageBuildFailed(
            f"{what}. Check the names and versions in the environment's packages ({image.packages.summary()}) "
            "and update the environment; a changed list is built at once, the same list is not built again for "
            f"{self._failure_memory_s:g} s. The build's last lines:\n{last}"
        )

    async def sweep(self) -> int:
        """Remove the build containers of this scope that no build of this manager runs (a previous run
        left them), and close their egress; how many."""
        removed = 0
        for info in await self._driver.build_containers():
            build_id = info.labels.get(LABEL_BUILD_ID, "")
            if build_id in self._active:
                continue
            try:
                await self._driver.remove(info.id)
            except (DockerException, OSError):
                logger.warning("could not remove a build container", extra={"fields": {"container": info.name}})
                continue
            logger.info("leftover build container removed", extra={"fields": {"container": info.name}})
            removed += 1
            if re.fullmatch(SESSION_ID_PATTERN, build_id):
                await self._close_egress(build_id)
        return removed

    async def close(self) -> None:
        """Stop the builds in progress (their callers get ``CancelledError``)."""
        for task in list(self._building.values()):
            task.cancel()
        if self._building:
            await asyncio.gather(*self._building.values(), return_exceptions=True)
