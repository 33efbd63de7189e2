"""Environment images: their tags, one build per tag however many ask, each build behind an egress
grant of its own, failures remembered for a while, leftover build containers swept, and the
container spec an environment with packages gets (with a fake engine and a fake credential-proxy)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from corral.contracts.egress import SESSION_ID_PATTERN, EgressPolicy
from corral.sandbox_manager.builds import LABEL_BUILD_ID, LABEL_BUILD_SCOPE, BuildError, BuildJob, BuildLimits
from corral.sandbox_manager.container_spec import ContainerInfo
from corral.sandbox_manager.egress import EgressMount, EgressUnavailable
from corral.sandbox_manager.environments import base_spec, place
from corral.sandbox_manager.images import (
    EnvironmentImage,
    EnvironmentImages,
    ImageBuildFailed,
    NoBuildEgress,
    environment_image,
)
from corral.sandbox_manager.packages import TRUSTED_CA_PATH, Packages, read_packages
from corral.sandbox_manager.settings import SandboxSettings

BASE = "corral-sandbox:abc123"
SETTINGS = SandboxSettings(image=BASE)
CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
LIMITS = BuildLimits(memory="2g", nano_cpus=2_000_000_000, pids=1024)


def packages(**lists: list[str]) -> Packages:
    return read_packages({"packages": lists})


def image(**lists: list[str]) -> EnvironmentImage:
    found = environment_image(BASE, packages(**lists))
    assert found is not None
    return found


@dataclass
class FakeEngine:
    """Images by tag and build containers; each build prints ``output``, then succeeds or raises ``failure``."""

    scope: str = "test"
    images: dict[str, str] = field(default_factory=dict)
    builds: list[BuildJob] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    failure: Exception | None = None
    #: When set, builds wait for it (so several requests can arrive during one).
    gate: asyncio.Event | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    #: Build containers on the engine (a build's own while it runs, and leftovers).
    containers: dict[str, ContainerInfo] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    async def image_id(self, ref: str) -> str | None:
        return self.images.get(ref)

    async def run_build(self, job: BuildJob, *, timeout_s: float, on_line: Callable[[str], None]) -> str:
        self.builds.append(job)
        self.containers[job.name] = ContainerInfo(
            id=job.name, name=job.name, labels=job.container_labels, running=True, created=0.0
        )
        try:
            self.started.set()
            for line in self.output:
                on_line(line)
            if self.gate is not None:
                await self.gate.wait()
            if self.failure is not None:
                raise self.failure
            self.images[job.tag] = f"sha256:{len(self.builds)}"
            return self.images[job.tag]
        finally:
            self.containers.pop(job.name, None)

    async def build_containers(self) -> list[ContainerInfo]:
        return list(self.containers.values())

    async def remove(self, container_id: str) -> None:
        self.removed.append(container_id)
        self.containers.pop(container_id, None)


@dataclass
class FakeEgress:
    """The credential-proxy's egress grants, by id."""

    open_now: dict[str, EgressPolicy] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    unavailable: str | None = None

    async def open(self, session_id: str, policy: EgressPolicy) -> EgressMount:
        assert re.fullmatch(SESSION_ID_PATTERN, session_id), session_id
        if self.unavailable is not None:
            raise EgressUnavailable(self.unavailable)
        self.opened.append(session_id)
        self.open_now[session_id] = policy
        return EgressMount(host_directory=f"/run/egress/{session_id}")

    async def close(self, session_id: str) -> None:
        self.closed.append(session_id)
        self.open_now.pop(session_id, None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def images_on(
    engine: FakeEngine,
    clock: Clock | None = None,
    timeout_s: float = 60.0,
    egress: FakeEgress | None = None,
    **options: object,
) -> EnvironmentImages:
    return EnvironmentImages(
        engine,
        egress or FakeEgress(),
        limits=LIMITS,
        timeout_s=timeout_s,
        failure_memory_s=120.0,
        clock=clock or Clock(),
        **options,  # type: ignore[arg-type]
    )


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


def test_the_tag_changes_with_how_images_are_made(monkeypatch: pytest.MonkeyPatch) -> None:
    before = image(apt=["jq"]).tag
    monkeypatch.setattr("corral.sandbox_manager.images.BUILD_FORMAT", "corral-env/next")
    assert image(apt=["jq"]).tag != before


def test_the_build_is_named_after_the_tag_as_an_egress_grant_may_be() -> None:
    wanted = image(apt=["jq"])
    assert wanted.build_id == "build-" + wanted.tag.removeprefix("corral-env:")
    assert re.fullmatch(SESSION_ID_PATTERN, wanted.build_id)


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


def test_trusted_certificates_go_into_the_build_container_and_the_spec() -> None:
    placement = place(SETTINGS, {"packages": {"apt": ["jq"]}}, trusted_ca=CA)
    assert placement.image is not None and placement.image.files == {TRUSTED_CA_PATH: CA}
    assert placement.image.script.steps[0] == "adding the trusted CA certificates"
    assert placement.spec.image != place(SETTINGS, {"packages": {"apt": ["jq"]}}).spec.image


# --- building --------------------------------------------------------------------------------------------
async def test_a_tag_the_engine_has_is_used_without_a_build() -> None:
    wanted = image(apt=["jq"])
    engine, egress = FakeEngine(images={wanted.tag: "sha256:old"}), FakeEgress()
    assert await images_on(engine, egress=egress).ensure(wanted) == "sha256:old"
    assert engine.builds == [] and egress.opened == []


async def test_a_missing_image_is_built_behind_an_egress_grant_of_its_own_closed_when_it_ends() -> None:
    wanted = environment_image(BASE, packages(apt=["jq"]), CA)
    assert wanted is not None
    engine, egress = FakeEngine(scope="blue"), FakeEgress()
    assert await images_on(engine, egress=egress).ensure(wanted) == "sha256:1"
    assert engine.builds == [
        BuildJob(
            build_id=wanted.build_id,
            name=f"corral-build-blue-{wanted.tag.removeprefix('corral-env:')}",
            scope="blue",
            base=BASE,
            tag=wanted.tag,
            script=wanted.script.text,
            egress=EgressMount(host_directory=f"/run/egress/{wanted.build_id}"),
            limits=LIMITS,
            image_labels=wanted.labels,
            files={TRUSTED_CA_PATH: CA},
        )
    ]
    # the package registries and nothing else
    assert egress.opened == [wanted.build_id] and egress.closed == [wanted.build_id]
    assert egress.open_now == {}


async def test_while_a_build_runs_its_grant_allows_only_the_package_registries() -> None:
    wanted = image(pip=["six"])
    engine, egress = FakeEngine(gate=asyncio.Event()), FakeEgress()
    building = asyncio.ensure_future(images_on(engine, egress=egress).ensure(wanted))
    async with asyncio.timeout(5):
        await engine.started.wait()
    assert egress.open_now == {wanted.build_id: EgressPolicy(allowed_hosts=[], allow_package_managers=True)}
    assert engine.gate is not None
    engine.gate.set()
    async with asyncio.timeout(5):
        await building
    assert egress.open_now == {}


async def test_concurrent_requests_for_one_tag_share_one_build() -> None:
    wanted = image(pip=["six==1.16.0"])
    gate = asyncio.Event()
    engine, egress = FakeEngine(gate=gate), FakeEgress()
    images = images_on(engine, egress=egress)
    waiting = [asyncio.ensure_future(images.ensure(wanted)) for _ in range(5)]
    async with asyncio.timeout(5):
        await engine.started.wait()
    await asyncio.sleep(0)  # let every request arrive while the build runs
    gate.set()
    async with asyncio.timeout(5):
        ids = await asyncio.gather(*waiting)
    assert ids == ["sha256:1"] * 5
    assert len(engine.builds) == 1 and egress.opened == [wanted.build_id]
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
        "corral-build: step 1/2: installing the apt packages (jq, corral-no-such-package)",
        "Reading package lists...",
        "E: Unable to locate package corral-no-such-package",
    ]
    engine, egress = FakeEngine(output=output, failure=BuildError("exited with code 100", exit_code=100)), FakeEgress()
    with pytest.raises(ImageBuildFailed) as failed:
        await images_on(engine, egress=egress).ensure(wanted)
    message = str(failed.value)
    assert message.startswith(
        "this environment's packages could not be installed, so no sandbox was started: installing the apt "
        "packages (jq, corral-no-such-package) failed with exit code 100. Check the names and versions in the "
        "environment's packages (apt:jq, apt:corral-no-such-package, pip:six) and update the environment; "
        "a changed list is built at once, the same list is not built again for 120 s. The build's last lines:\n"
    )
    last = message.split("The build's last lines:\n", 1)[1].splitlines()
    assert len(last) == 20
    assert last[-3:] == output[-3:]
    assert failed.value.error_type == "api_error" and failed.value.error_code == "packages_not_installed"
    assert egress.closed == [wanted.build_id]


async def test_the_step_is_the_last_one_announced() -> None:
    output = [
        "corral-build: step 1/2: installing the apt packages (jq)",
        "corral-build: step 2/2: installing the pip packages (six)",
        "ERROR: No matching distribution found for six",
    ]
    engine = FakeEngine(output=output, failure=BuildError("exited with code 1", exit_code=1))
    with pytest.raises(ImageBuildFailed, match=r"installing the pip packages \(six\) failed with exit code 1\."):
        await images_on(engine).ensure(image(apt=["jq"], pip=["six"]))


async def test_a_failure_that_is_not_a_step_exiting_is_quoted() -> None:
    engine = FakeEngine(failure=BuildError("No such image: corral-sandbox:abc123"))
    with pytest.raises(ImageBuildFailed) as failed:
        await images_on(engine).ensure(image(apt=["jq"]))
    assert "starting the build failed." in str(failed.value)
    assert str(failed.value).endswith("The build's last lines:\nNo such image: corral-sandbox:abc123")


async def test_a_build_that_ran_out_of_memory_says_so() -> None:
    engine = FakeEngine(
        output=["corral-build: step 1/1: installing the cargo packages (ripgrep)"],
        failure=BuildError("the build ran out of memory (its limit is 2g)", exit_code=137, out_of_memory=True),
    )
    with pytest.raises(ImageBuildFailed) as failed:
        await images_on(engine).ensure(image(cargo=["ripgrep"]))
    assert "installing the cargo packages (ripgrep) failed." in str(failed.value)
    assert str(failed.value).endswith("the build ran out of memory (its limit is 2g)")


async def test_a_failure_is_remembered_for_a_while_then_built_again() -> None:
    wanted = image(apt=["corral-no-such-package"])
    clock = Clock()
    engine = FakeEngine(failure=BuildError("exited with code 100", exit_code=100))
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
    wanted = image(cargo=["ripgrep"])
    output = ["corral-build: step 1/1: installing the cargo packages (ripgrep)", "Compiling"]
    engine, egress = FakeEngine(output=output, gate=asyncio.Event()), FakeEgress()
    images = images_on(engine, timeout_s=0.05, egress=egress)
    with pytest.raises(ImageBuildFailed) as failed:
        async with asyncio.timeout(5):
            await images.ensure(wanted)
    assert (
        "the build took longer than 0.05 s (CORRAL_SANDBOX_ENVIRONMENT_BUILD_TIMEOUT_S) and was stopped while "
        "installing the cargo packages (ripgrep)."
    ) in str(failed.value)
    assert engine.containers == {} and egress.closed == [wanted.build_id]


async def test_closing_cancels_the_builds_in_progress_and_closes_their_egress() -> None:
    wanted = image(apt=["jq"])
    engine, egress = FakeEngine(gate=asyncio.Event()), FakeEgress()
    images = images_on(engine, egress=egress)
    waiting = asyncio.ensure_future(images.ensure(wanted))
    async with asyncio.timeout(5):
        await engine.started.wait()
        await images.close()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    assert egress.closed == [wanted.build_id] and egress.open_now == {}


async def test_with_builds_off_an_image_the_engine_has_is_used_and_none_is_built() -> None:
    engine, egress = FakeEngine(), FakeEgress()
    wanted, missing = image(apt=["jq"]), image(apt=["curl"])
    engine.images[wanted.tag] = "sha256:prebuilt"
    images = images_on(engine, egress=egress, builds_enabled=False)

    assert await images.ensure(wanted) == "sha256:prebuilt"
    with pytest.raises(ImageBuildFailed) as refused:
        await images.ensure(missing)
    assert "CORRAL_SANDBOX_ENVIRONMENT_BUILDS is off" in str(refused.value)
    assert engine.builds == [] and egress.opened == []


async def test_without_an_egress_proxy_nothing_is_built_and_the_failure_says_what_to_set() -> None:
    wanted = image(apt=["jq"])
    engine, egress = FakeEngine(), FakeEgress(unavailable="no credential-proxy is running")
    images = images_on(engine, egress=egress)
    with pytest.raises(NoBuildEgress) as refused:
        await images.ensure(wanted)
    message = str(refused.value)
    assert (
        "egress proxy of the credential-proxy, and none could be opened for this build (no credential-proxy is running)"
    ) in message
    assert "CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR" in message
    assert "CORRAL_SANDBOX_ENVIRONMENT_BUILDS=off" in message
    assert refused.value.error_code == "packages_not_installed"
    assert engine.builds == []
    # a deployment matter, not the packages': asked again at once, and built once egress is there
    egress.unavailable = None
    assert await images.ensure(wanted) == "sha256:1"


# --- leftovers -------------------------------------------------------------------------------------------
async def test_a_sweep_removes_build_containers_a_previous_run_left_and_closes_their_egress() -> None:
    running = image(apt=["jq"])
    engine, egress = FakeEngine(gate=asyncio.Event()), FakeEgress()
    leftover = ContainerInfo(
        id="c1",
        name="corral-build-test-0123456789ab",
        labels={LABEL_BUILD_SCOPE: "test", LABEL_BUILD_ID: "build-0123456789ab"},
        running=True,
        created=0.0,
    )
    engine.containers["c1"] = leftover
    images = images_on(engine, egress=egress)
    building = asyncio.ensure_future(images.ensure(running))
    async with asyncio.timeout(5):
        await engine.started.wait()

    assert await images.sweep() == 1
    assert engine.removed == ["c1"]  # the build running now is left alone
    assert egress.closed == ["build-0123456789ab"]
    assert engine.gate is not None
    engine.gate.set()
    async with asyncio.timeout(5):
        await building
    assert await images.sweep() == 0
