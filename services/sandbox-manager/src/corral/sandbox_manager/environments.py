"""What container an environment's ``config`` gets here, and what it asked for that it cannot have.

``networking: {type: unrestricted}`` puts the sandbox on the configured Docker network
(``CORRAL_SANDBOX_NETWORK``, default ``bridge``) when the engine has it; an engine started with
``--bridge=none`` has no such network, so those sandboxes get ``none`` and a notice says so.
``limited`` networking needs an egress proxy that enforces ``allowed_hosts``; until there is one it
gets ``none`` (loopback only), which is stricter than asked, and a notice when hosts were listed.
``packages`` are installed into an environment image built from the sandbox image (``images``);
the spec names that image, so its sandboxes never share a warm pool with the base image's.
The ``host`` network is never used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from corral.sandbox_manager.containers import NO_NETWORK, ContainerSpec
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


class UnsupportedEnvironment(Exception):
    """The environment cannot run its tools here (a ``self_hosted`` one runs them on its own worker)."""


def base_spec(settings: SandboxSettings, network: str = NO_NETWORK) -> ContainerSpec:
    return ContainerSpec(
        image=settings.image,
        user=settings.user,
        memory=settings.memory,
        nano_cpus=int(settings.cpus * 1_000_000_000),
        pids=settings.pids,
        workspace_size=settings.workspace_size,
        tmp_size=settings.tmp_size,
        network=network,
        output_limit=settings.output_limit,
        default_timeout_ms=settings.tool_timeout_ms,
        max_timeout_ms=settings.tool_timeout_max_ms,
    )


def place(
    settings: SandboxSettings, config: dict[str, Any], networks: set[str], *, trusted_ca: bytes | None = None
) -> Placement:
    """The container spec for an environment ``config`` on an engine with ``networks``; environment
    images trust ``trusted_ca`` (PEM) while they are built.

    Raises:
        UnsupportedEnvironment: a ``self_hosted`` environment.
        InvalidPackages: a ``packages`` entry that is not a package name.
    """
    if config.get("type") == "self_hosted":
        raise UnsupportedEnvironment(
            "this session's environment is self_hosted: its tools run on the environment's own worker, "
            "not in a Corral sandbox"
        )
    notices: list[str] = []
    networking = config.get("networking") or {}
    kind = networking.get("type") if isinstance(networking, dict) else None
    network = NO_NETWORK
    if kind == "unrestricted":
        usable = settings.network not in ("host", NO_NETWORK) and settings.network in networks
        if usable:
            network = settings.network
        else:
            notices.append(
                "This environment asks for unrestricted networking, but this deployment's Docker engine "
                f"has no network {settings.network!r} for sandboxes, so this sandbox has no network "
                "(loopback only): downloads and remote requests will fail."
            )
    elif kind == "limited" and isinstance(networking, dict) and networking.get("allowed_hosts"):
        notices.append(
            "This environment allows a list of hosts, but this deployment has no egress proxy to enforce "
            "it, so this sandbox has no network (loopback only): requests to those hosts will fail."
        )
    spec = base_spec(settings, network)
    image = environment_image(settings.image, read_packages(config), trusted_ca)
    if image is not None:
        spec = replace(spec, image=image.tag)
    return Placement(spec=spec, notices=tuple(notices), image=image)
