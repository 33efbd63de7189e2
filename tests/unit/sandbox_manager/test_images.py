"""Environment images: their tags, one build per tag however many ask, failures remembered for a
while, and the container spec an environment with packages gets (with a fake engine)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest

from corral.sandbox_manager.builds import BuildError
from corral.sandbox_manager.environments import base_spec, place
from corral.sandbox_manager.images import (
    EnvironmentImage,
    EnvironmentImages,
    ImageBuildFailed,
    environment_image,
)
from corral.sandbox_manager.packages import TRUSTED_CA_FILE, Packages, read_packages
from corral.sandbox_manager.settings import SandboxSettings

BASE = "corral-sandbox:abc123"
SETTINGS = SandboxSettings(image=BASE, network="bridge")
CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def packages(**lists: list[str]) -> Packages:
    return read_packages({"packages": lists})


def image(**lists: list[str]) -> EnvironmentImage:
    found = environment_image(BASE, packages(**lists))
    assert found is not None
    return found


@dataclass
class Call:
    dockerfile: str
    files: Mapping[str, bytes]
    tag: str
    labels: Mapping[str, str]


@dataclass
class FakeEngine:
    """Images by tag; each build prints ``output`` and then succeeds or raises ``failure``."""

    images: dict[str, str] = field(default_factory=dict)
    builds: list[Call] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    failure: Exception | None = None
    #: When set, builds wait for it (so several requests can arrive during one).
    gate: asyncio.Event | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def image_id(self, ref: str) -> str | None:
        return self.images.get(ref)

    async def build_image(
        self,
        dockerfile: str,
        *,
        files: Mapping[str, bytes],
        tag: str,
        labels: Mapping[str, str],
        timeout_s: float,
        on_line: Callable[[str], None],
    ) -> str:
        self.builds.append(Call(dockerfile, files, tag, labels))
        self.started.set()
        for line in self.output:
            on_line(line)
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        self.images[tag] = f"sha256:{len(self.builds)}"
        return self.images[tag]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def images_on(engine: FakeEngine, clock: Clock | None = None, timeout_s: float = 60.0) -> EnvironmentImages:
    return EnvironmentImages(engine, timeout_s=timeout_s, failure_memory_s=120.0, clock=clock or Clock())


# --- tags ------------------------------------------------------------------------------------------------
def test_an_environment_without_packages_uses_the_base_image() -> None:
    assert environment_image(BASE, packages()) is None
    assert environment_image(BASE, packages(apt=[], pip=[])) is None


def test_the_tag_is_stable_for_the_same_packages_however_the_config_is_written() -> None:
    one = image(apt=["jq"], pip=["six==1.16.0"])
    assert one.tag.startswith("corral-env:") and len(one.tag.removeprefix("corral-env:")) == 12
    assert image(pip=["six==1.16.0"], apt=["jq"], npm=[]).tag == one.tag


@pytest.mark.parametrize(
    "other",
    [
        EnvironmentImage("corral-sandbox:def456", packages(apt=["jq"], pip=["six==1.16.0"])),
        EnvironmentImage(BASE, packages(apt=["jq"], pip=["six==1.15.0"])),
        EnvironmentImage(BASE, packages(apt=["jq"])),
        EnvironmentImage(BASE, packages(apt=["jq"], npm=["six==1.16.0"])),
        EnvironmentImage(BASE, packages(apt=["jq"], pip=["six==1.16.0", "attrs"])),
        EnvironmentImage(BASE, packages(apt=["jq"], pip=["six==1.16.0"]), trusted_ca=CA),
    ],
)
def test_the_tag_changes_with_the_base_any_package_and_the_trusted_certificates(other: EnvironmentImage) -> None:
    assert other.tag != image(apt=["jq"], pip=["six==1.16.0"]).tag


def test_the_order_of_entries_within_a_manager_is_part_of_the_tag() -> None:
    assert image(pip=["a", "b"]).tag != image(pip=["b", "a"]).tag


def test_the_image_is_labelled_as_an_environment_image() -> None:
    assert image(apt=["jq"]).labels == {
        "corral.image": "environment",
        "corral.image.base": BASE,
        "corral.image.packages": '{"apt":["jq"]}',
    }


# --- the container spec ---------------------------------------------------------------------------------
def test_an_environment_with_packages_gets_a_spec_naming_its_image_so_it_never_shares_the_base_pool() -> None:
    config = {"type": "cloud", "packages": {"type": "packages", "apt": ["jq"], "pip": []}}
    placement = place(SETTINGS, config)
    assert placement.image is not None and placement.image == image(apt=["jq"])
    assert placement.spec.image == placement.image.tag
    assert placement.spec.hash != base_spec(SETTINGS).hash
    assert placement.notices == ()
    without = place(SETTINGS, {"type": "cloud", "packages": {"type": "packages", "apt": []}})
    assert without.image is None and without.spec.image == base_spec(SETTINGS).image


def test_trusted_certificates_go_into_the_build_context_and_the_spec() -> None:
    placement = place(SETTINGS, {"packages": {"apt": ["jq"]}}, trusted_ca=CA)
    assert placement.image is not None and placement.image.files == {TRUSTED_CA_FILE: CA}
    assert placement.spec.image != place(SETTINGS, {"packages": {"apt": ["jq"]}}).spec.image


# --- building --------------------------------------------------------------------------------------------
async def test_a_tag_the_engine_has_is_used_without_a_build() -> None:
    wanted = image(apt=["jq"])
    engine = FakeEngine(images={wanted.tag: "sha256:old"})
    assert await images_on(engine).ensure(wanted) == "sha256:old"
    assert engine.builds == []


async def test_a_missing_image_is_built_from_its_dockerfile_with_its_labels() -> None:
    wanted = image(apt=["jq"])
    engine = FakeEngine(output=["Step 1/5 : FROM corral-sandbox:abc123"])
    assert await images_on(engine).ensure(wanted) == "sha256:1"
    assert engine.builds == [Call(wanted.dockerfile.text, {}, wanted.tag, wanted.labels)]


async def test_concurrent_requests_for_one_tag_share_one_build() -> None:
    wanted = image(pip=["six==1.16.0"])
    gate = asyncio.Event()
    engine = FakeEngine(gate=gate)
    images = images_on(engine)
    waiting = [asyncio.ensure_future(images.ensure(wanted)) for _ in range(5)]
    async with asyncio.timeout(5):
        await engine.started.wait()
    await asyncio.sleep(0)  # let every request arrive while the build runs
    gate.set()
    async with asyncio.timeout(5):
        ids = await asyncio.gather(*waiting)
    assert ids == ["sha256:1"] * 5
    assert len(engine.builds) == 1
    assert await images.ensure(wanted) == "sha256:1" and len(engine.builds) == 1


async def test_a_caller_that_gives_up_does_not_stop_the_build_others_wait_for() -> None:
    wanted = image(apt=["jq"])
    gate = asyncio.Event()
    engine = FakeEngine(gate=gate)
    images = images_on(engine)
    impatient = asyncio.ensure_future(images.ensure(wanted))
    patient = asyncio.ensure_future(images.ensure(wanted))
    async with asyncio.timeout(5):
        await engine.started.wait()
    impatient.cancel()
    gate.set()
    async with asyncio.timeout(5):
        assert await patient == "sha256:1"
    assert impatient.cancelled()


async def test_a_failed_build_names_the_step_its_exit_code_and_the_last_lines() -> None:
    wanted = image(apt=["jq", "corral-no-such-package"], pip=["six"])
    output = [f"line {i}" for i in range(30)]
    output += [
        "Step 3/7 : RUN set -eu; apt-get update; ...",
        " ---> Running in 0123456789ab",
        "E: Unable to locate package corral-no-such-package",
        "Removing intermediate container 0123456789ab",
    ]
    engine = FakeEngine(
        output=output, failure=BuildError("The command '/bin/sh -c set -eu; ...' returned a non-zero code: 100")
    )
    with pytest.raises(ImageBuildFailed) as failed:
        await images_on(engine).ensure(wanted)
    message = str(failed.value)
    assert message.startswith(
        "this environment's packages could not be installed, so no sandbox was started: installing the apt "
        "packages (jq, corral-no-such-package) failed with exit code 100. Check the names and versions in the "
        "environment's packages (apt:jq, apt:corral-no-such-package, pip:six) and update the environment; "
        "a changed list is built at once, the same list is not built again for 120 s. The build's last lines:\n"
    )
    last = message.split("The build's last lines:\n", 1)[1].splitlines()
    assert len(last) == 20
    assert last[-2:] == [
        "Step 3/7 : RUN set -eu; apt-get update; ...",
        "E: Unable to locate package corral-no-such-package",
    ]
    assert failed.value.error_type == "api_error" and failed.value.error_code == "packages_not_installed"


async def test_an_engine_error_that_is_not_a_step_is_quoted() -> None:
    engine = FakeEngine(failure=BuildError("pull access denied for corral-sandbox"))
    with pytest.raises(ImageBuildFailed) as failed:
        await images_on(engine).ensure(image(apt=["jq"]))
    assert "starting the build failed." in str(failed.value)
    assert str(failed.value).endswith("The build's last lines:\npull access denied for corral-sandbox")


async def test_a_failure_is_remembered_for_a_while_then_built_again() -> None:
    wanted = image(apt=["corral-no-such-package"])
    clock = Clock()
    engine = FakeEngine(failure=BuildError("returned a non-zero code: 100"))
    images = images_on(engine, clock)
    with pytest.raises(ImageBuildFailed):
        await images.ensure(wanted)
    clock.now += 30
    with pytest.raises(ImageBuildFailed) as remembered:
        await images.ensure(wanted)
    assert len(engine.builds) == 1
    assert "failed with exit code 100" in str(remembered.value)
    assert str(remembered.value).endswith(
        "(this build failed 30 s ago; the same packages are built again 90 s from now)"
    )
    # another list is not held back by it
    engine.failure = None
    assert await images.ensure(image(apt=["jq"])) == "sha256:2"
    clock.now += 91
    assert await images.ensure(wanted) == "sha256:3"
    assert len(engine.builds) == 3


async def test_a_build_that_takes_too_long_is_stopped_and_reported() -> None:
    engine = FakeEngine(output=["Step 3/6 : RUN set -eu; ...", "Compiling"], gate=asyncio.Event())
    images = images_on(engine, timeout_s=0.05)
    with pytest.raises(ImageBuildFailed) as failed:
        async with asyncio.timeout(5):
            await images.ensure(image(cargo=["ripgrep"]))
    assert (
        "the build took longer than 0.05 s (CORRAL_SANDBOX_ENVIRONMENT_BUILD_TIMEOUT_S) and was stopped while "
        "installing the cargo packages (ripgrep)."
    ) in str(failed.value)


async def test_closing_cancels_the_builds_in_progress() -> None:
    engine = FakeEngine(gate=asyncio.Event())
    images = images_on(engine)
    waiting = asyncio.ensure_future(images.ensure(image(apt=["jq"])))
    async with asyncio.timeout(5):
        await engine.started.wait()
        await images.close()
        with pytest.raises(asyncio.CancelledError):
            await waiting


async def test_with_builds_off_an_image_the_engine_has_is_used_and_none_is_built() -> None:
    engine = FakeEngine()
    wanted, missing = image(apt=["jq"]), image(apt=["curl"])
    engine.images[wanted.tag] = "sha256:prebuilt"
    images = EnvironmentImages(engine, timeout_s=60.0, failure_memory_s=120.0, builds_enabled=False, clock=Clock())

    assert await images.ensure(wanted) == "sha256:prebuilt"
    with pytest.raises(ImageBuildFailed) as refused:
        await images.ensure(missing)
    assert "CORRAL_SANDBOX_ENVIRONMENT_BUILDS is off" in str(refused.value)
    assert engine.builds == []
