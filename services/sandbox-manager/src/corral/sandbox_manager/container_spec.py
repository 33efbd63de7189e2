"""What a sandbox container is: the spec that makes two interchangeable, the labels the manager puts
on it, and the hardened configuration the engine is asked to create it with.

A sandbox container is hardened by construction: all capabilities dropped, ``no-new-privileges``,
the default seccomp profile, a read-only root with tmpfs mounts capped in bytes and inodes at
``/workspace``, ``/tmp`` and ``/dev/shm``, pids/memory/CPU limits, a non-root user, network ``none``
(loopback only), no log driver (tool output never reaches the host's disk), and no bind mount but
one: for a spec with network ``egress``, the session's egress proxy directory (holding only its
proxy socket), read-only. Never the Docker socket.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Final

import docker
from docker.types import LogConfig

from corral.contracts.egress import SANDBOX_EGRESS_DIR
from corral.sandbox_manager import agent
from corral.sandbox_manager.egress import SANDBOX_CA_BUNDLE, EgressMount

WORKSPACE: Final = "/workspace"
#: The sandbox's /dev/shm (POSIX shared memory, semaphores): the engine's default size, few inodes.
SHM_SIZE: Final = "64m"
SHM_INODES: Final = 4096

# Labels on every container the manager creates.
LABEL_MANAGED: Final = "corral.managed"
LABEL_SCOPE: Final = "corral.scope"
LABEL_CONFIG: Final = "corral.config_hash"
LABEL_POOL: Final = "corral.pool"
LABEL_SESSION: Final = "corral.session_id"
LABEL_ENVIRONMENT: Final = "corral.environment_id"
LABEL_NETWORK: Final = "corral.network"
#: A pooled container with network ``egress``: the egress grant its proxy directory belongs to (a
#: ``pool-<hex>`` slot, given the claiming session's policy at claim time).
LABEL_EGRESS_SLOT: Final = "corral.egress_slot"

#: ``ContainerSpec.network`` values. The container's Docker network is always ``none``; ``egress``
#: says its session's egress proxy socket is mounted (``corral.sandbox_manager.egress``).
NO_NETWORK: Final = "none"
EGRESS: Final = "egress"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything that makes two sandboxes interchangeable; its hash keys the warm pool."""

    image: str
    user: str
    memory: str
    nano_cpus: int
    pids: int
    workspace_size: str
    tmp_size: str
    workspace_inodes: int
    tmp_inodes: int
    network: str
    output_limit: int
    part_bytes: int
    default_timeout_ms: int
    max_timeout_ms: int

    @property
    def hash(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]

    def agent_config(self) -> str:
        return json.dumps(
            {
                "root": WORKSPACE,
                "output_limit": self.output_limit,
                "part_bytes": self.part_bytes,
                "default_timeout_ms": self.default_timeout_ms,
                "max_timeout_ms": self.max_timeout_ms,
            }
        )


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    labels: dict[str, str]
    running: bool
    created: float
    #: The host directory mounted at ``SANDBOX_EGRESS_DIR`` (its egress proxy's socket), if any.
    egress_directory: str | None = None


def create_arguments(
    api: docker.APIClient, spec: ContainerSpec, name: str, labels: dict[str, str], egress: EgressMount | None
) -> dict[str, Any]:
    """The keyword arguments of ``api.create_container(spec.image, ...)`` for a sandbox running the
    exec agent; ``egress`` (for a spec with network ``egress``) mounts the session's proxy directory."""
    environment = {
        "HOME": WORKSPACE,
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "PAGER": "cat",
        "GIT_PAGER": "cat",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    config = spec.agent_config()
    binds: list[str] = []
    if egress is not None:
        environment.update(egress.environment())
        extra: dict[str, Any] = {"egress_socket": egress.socket_in_sandbox}
        if egress.ca_certificate:  # the agent writes the trust bundle the CA variables name
            extra |= {"egress_ca": egress.ca_certificate, "egress_ca_bundle": SANDBOX_CA_BUNDLE}
        config = json.dumps({**json.loads(config), **extra})
        binds.append(f"{egress.host_directory}:{SANDBOX_EGRESS_DIR}:ro")
    uid, _, gid = spec.user.partition(":")
    # Every writable mount is a tmpfs capped in bytes and in inodes (an inode fill gives the filler
    # ENOSPC, not the sandbox an out-of-memory kill), and none names a host path in mountinfo.
    tmpfs_opts = "rw,nosuid,nodev"
    host_config = api.create_host_config(
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        read_only=True,
        tmpfs={
            WORKSPACE: (
                f"{tmpfs_opts},exec,size={spec.workspace_size},nr_inodes={spec.workspace_inodes},"
                f"uid={uid},gid={gid or uid},mode=0755"
            ),
            "/tmp": f"{tmpfs_opts},noexec,size={spec.tmp_size},nr_inodes={spec.tmp_inodes},mode=1777",
            # in place of the engine's /dev/shm (same size, no inode cap)
            "/dev/shm": f"{tmpfs_opts},noexec,size={SHM_SIZE},nr_inodes={SHM_INODES},mode=1777",
        },
        pids_limit=spec.pids,
        mem_limit=spec.memory,
        memswap_limit=spec.memory,
        nano_cpus=spec.nano_cpus,
        network_mode=NO_NETWORK,
        binds=binds or None,
        log_config=LogConfig(type="none"),
        ipc_mode="private",
        init=False,
    )
    return {
        "command": ["python3", "-c", agent.source(), config],
        "name": name,
        "user": spec.user,
        "working_dir": WORKSPACE,
        "environment": environment,
        "stdin_open": True,
        # detach: StdinOnce stays false, so the agent's stdin outlives an attach (a manager restart)
        "detach": True,
        "tty": False,
        "labels": labels,
        "host_config": host_config,
    }
