"""What container an environment's ``config`` gets here, and what it asked for that it cannot have.

``networking: {type: unrestricted}`` puts the sandbox on the configured Docker network
(``CORRAL_SANDBOX_NETWORK``, default ``bridge``) when the engine has it; an engine started with
``--bridge=none`` has no such network, so those sandboxes get ``none`` and a notice says so.
``limited`` networking needs an egress proxy that enforces ``allowed_hosts``; until there is one it
gets ``none`` (loopback only), which is stricter than asked, and a notice when hosts were listed.
``packages`` are not installed yet (environment images built from them come later): a notice.
The ``host`` network is never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.sandbox_manager.containers import NO_NETWORK, ContainerSpec
from corral.sandbox_manager.settings import SandboxSettings


@dataclass(frozen=True)
class Placement:
    spec: ContainerSpec
    notices: tuple[str, ...]


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


def place(settings: SandboxSettings, config: dict[str, Any], networks: set[str]) -> Placement:
    """The container spec for an environment ``config`` on an engine with ``networks``.

    Raises:
        UnsupportedEnvironment: a ``self_hosted`` environment.
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
    packages = config.get("packages")
    if isinstance(packages, dict):
        wanted = [
            f"{manager}:{name}"
            for manager, names in packages.items()
            if manager != "type" and isinstance(names, list)
            for name in names
        ]
        if wanted:
            notices.append(
                "This environment lists packages ("
                + ", ".join(wanted[:10])
                + ("..." if len(wanted) > 10 else "")
                + "), but this deployment does not install environment packages yet: they are not in this sandbox."
            )
    return Placement(spec=base_spec(settings, network), notices=tuple(notices))
