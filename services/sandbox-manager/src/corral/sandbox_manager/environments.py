"""What container an environment's ``config`` gets here, and what it asked for that it cannot have.

Every sandbox has network ``none`` (loopback only). Network access is egress through the session's
own proxy (``egress``): ``networking: {type: unrestricted}`` (the API's default) lets the sandbox
reach any public host, ``limited`` only its ``allowed_hosts`` (plus the package registries with
``allow_package_managers``); ``limited`` with neither gets no proxy at all. Sandboxes with egress
share one spec (and warm pool): a pooled one gets its session's policy when claimed (``sessions``).
``packages`` are installed into an environment image built from the sandbox image (``images``);
the spec names that image, so its sandboxes never share a warm pool with the base image's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from corral.contracts.egress import EgressPolicy
from corral.sandbox_manager.container_spec import EGRESS, NO_NETWORK, ContainerSpec
from corral.sandbox_manager.images import EnvironmentImage, environment_image
from corral.sandbox_manager.packages import read_packages
from corral.sandbox_manager.settings import SandboxSettings


@dataclass(frozen=True)
class Placement:
    spec: ContainerSpec
    notices: tuple[str, ...]
    #: The environment image ``spec.image`` names, to be built before a container is started;
    #: ``None`` when the spec runs the base image.
    image: EnvironmentImage | None = None
    #: What the session's egress proxy lets the sandbox reach; ``None``: no network at all.
    egress: EgressPolicy | None = None


class UnsupportedEnvironment(Exception):
    """The environment cannot run its tools here (a ``self_hosted`` one runs them on its own worker)."""


def base_spec(settings: SandboxSettings) -> ContainerSpec:
    return ContainerSpec(
        image=settings.image,
        user=settings.user,
        memory=settings.memory,
        nano_cpus=int(settings.cpus * 1_000_000_000),
        pids=settings.pids,
        workspace_size=settings.workspace_size,
        tmp_size=settings.tmp_size,
        workspace_inodes=settings.workspace_inodes,
        tmp_inodes=settings.tmp_inodes,
        network=NO_NETWORK,
        output_limit=settings.output_limit,
        part_bytes=settings.part_bytes,
        default_timeout_ms=settings.tool_timeout_ms,
        max_timeout_ms=settings.tool_timeout_max_ms,
    )


def place(settings: SandboxSettings, config: dict[str, Any], *, trusted_ca: bytes | None = None) -> Placement:
    """The container spec for an environment ``config``; environment images trust ``trusted_ca``
    (PEM) while they are built.

    Raises:
        UnsupportedEnvironment: a ``self_hosted`` environment.
        InvalidPackages: a ``packages`` entry that is not a package name.
    """
    if config.get("type") == "self_hosted":
        raise UnsupportedEnvironment(
            "this session's environment is self_hosted: its tools run on the environment's own worker, "
            "not in a Corral sandbox"
        )
    egress = egress_policy(config)
    spec = replace(base_spec(settings), network=NO_NETWORK if egress is None else EGRESS)
    image = environment_image(settings.image, read_packages(config), trusted_ca)
    if image is not None:
        spec = replace(spec, image=image.tag)
    return Placement(spec=spec, notices=(), image=image, egress=egress)


def egress_policy(config: dict[str, Any]) -> EgressPolicy | None:
    """What the environment's ``networking`` lets its sandboxes reach (``None``: nothing)."""
    networking = config.get("networking")
    if not isinstance(networking, dict) or networking.get("type") != "limited":
        return EgressPolicy(allowed_hosts=None, allow_package_managers=True)  # unrestricted, the default
    hosts = networking.get("allowed_hosts")
    allowed = [str(h) for h in hosts] if isinstance(hosts, list) else []
    package_managers = networking.get("allow_package_managers") is True
    if not allowed and not package_managers:
        return None
    return EgressPolicy(allowed_hosts=allowed, allow_package_managers=package_managers)
