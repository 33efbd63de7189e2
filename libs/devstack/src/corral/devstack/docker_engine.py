"""Docker Engine: a private ``dockerd`` (Debian's docker.io) per data root, or ``CORRAL_DOCKER_HOST``.

The engine is identified by its data root (default ``<state>/data/docker``; ``CORRAL_DOCKER_DATA_ROOT``
moves it, so CI and repeated test stacks can share one image cache). Everything that must not clash
with a system ``dockerd`` or another developer's lives in a short directory derived from a hash of
the data root, ``/run/corral-docker/<hash>/`` (unix socket paths must stay under ~100 chars):
``docker.sock``, ``exec/`` (``--exec-root``: containerd's state and socket), ``dockerd.pid``
(``--pidfile``), ``daemon.json`` (an empty ``--config-file``, so ``/etc/docker/daemon.json`` is not
read). Containers have no networking but ``none`` (``--bridge=none``), and the engine leaves the
host's firewall and ``ip_forward`` alone (``--iptables=false --ip-forward=false --ip-masq=false``).

Two stacks with the same data root share one engine (two daemons on one data root would corrupt
it): the stack that started it owns it (its ``pids/docker.pid``) and is the one that stops it; the
other reports it as shared and leaves it running.

Stopping sends SIGTERM: dockerd stops its containers (``--shutdown-timeout`` seconds each, then
SIGKILL) and its containerd, then exits; only after ``DOCKER_STOP_TIMEOUT`` is it killed, and then a
containerd it left behind is stopped by the pid in its exec root. A system dockerd is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.errors import DockerException

from corral.devstack import processes
from corral.devstack.components import Component, ComponentStatus
from corral.devstack.configuration import process_environment
from corral.devstack.errors import DevstackError, ReadinessTimeoutError
from corral.devstack.state import StateDir

log = logging.getLogger(__name__)

INSTALL_HINT = "apt-get install -y docker.io"
#: Seconds dockerd gives each container to stop on shutdown before it kills it.
CONTAINER_SHUTDOWN_TIMEOUT = 10
#: Seconds to wait for dockerd to exit after SIGTERM (it stops its containers first).
DOCKER_STOP_TIMEOUT = 40.0
#: Where dockerd, containerd, runc and docker-init live on Debian; added to PATH if missing.
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
PING_TIMEOUT = 2.0


def engine_key(identity: str) -> str:
    """12 hex chars naming an engine's run directory (a hash of its data root or host)."""
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def run_base() -> Path:
    """A short, root-owned directory for sockets, pid files and locks of engines."""
    if os.geteuid() == 0:
        return Path("/run/corral-docker")
    runtime = process_environment().get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "corral-docker"
    return Path(tempfile.gettempdir()) / f"corral-docker-{os.getuid()}"


def system_path(path: str | None) -> str:
    """``path`` with the Debian system binary directories appended (``sudo``/cron PATHs lack sbin)."""
    parts = [p for p in (path or "").split(os.pathsep) if p]
    return os.pathsep.join([*parts, *(d for d in SYSTEM_DIRS if d not in parts)])


def find_dockerd() -> str:
    found = shutil.which("dockerd", path=system_path(process_environment().get("PATH")))
    if found is None:
        raise DevstackError(
            f"dockerd is not installed: run `{INSTALL_HINT}` (as root), "
            "or set CORRAL_DOCKER_HOST to a Docker engine that runs elsewhere "
            "(or run without sandboxes: corral-dev up --no-docker, CORRAL_DOCKER=0)"
        )
    return found


def docker_client(host: str, timeout: float = 60.0) -> docker.DockerClient:
    """A client for the engine at ``host`` (API version negotiated; raises when nothing answers)."""
    if host.startswith("unix://") and not _unix_socket_accepts(host.removeprefix("unix://"), min(timeout, 5.0)):
        raise DockerException(f"nothing listens on {host}")
    return docker.DockerClient(base_url=host, timeout=int(max(timeout, 1)))


def ping(host: str, timeout: float = PING_TIMEOUT) -> bool:
    """True when ``GET /_ping`` on ``host`` answers OK.

    A fixed (minimum) API version: version negotiation in the constructor would connect outside
    the ``close()`` below. A unix socket is tried with the stdlib first: the SDK's unix connection
    leaks its socket when ``connect`` fails (nothing listening yet).
    """
    if host.startswith("unix://") and not _unix_socket_accepts(host.removeprefix("unix://"), timeout):
        return False
    client = docker.APIClient(base_url=host, version=MINIMUM_DOCKER_API_VERSION, timeout=int(max(timeout, 1)))
    try:
        return bool(client.ping())
    except (DockerException, OSError):
        return False
    finally:
        client.close()


def _unix_socket_accepts(path: str, timeout: float) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``."""
    prefix = str(path.resolve())
    found: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1:
                mount_point = fields[1].replace("\\040", " ")
                if mount_point == prefix or mount_point.startswith(prefix + "/"):
                    found.append(mount_point)
    return found


def unmount_under(path: Path) -> list[str]:
    """Unmount (lazily) everything mounted at or below ``path``; what is still mounted after."""
    for mount_point in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
    return mounts_under(path)


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def is_self_bind_mount(path: Path) -> bool:
    """True when the topmost mount at ``path`` is ``path`` bind-mounted onto itself.

    dockerd makes its data root such a mount (to make it shared) when the filesystem above is
    private, and removes it on a clean shutdown only; a killed dockerd leaves it. A real mount at
    the data root (a disk, or another directory bound there) is never taken for one.
    """
    target = str(path)
    entries: dict[int, tuple[int, str, str, str]] = {}  # id -> (parent id, device, root, mount point)
    top: int | None = None
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) < 5:
                continue
            mount_id, parent = int(fields[0]), int(fields[1])
            entries[mount_id] = (parent, fields[2], _unescape(fields[3]), _unescape(fields[4]))
            if entries[mount_id][3] == target:
                top = mount_id
    if top is None:
        return False
    parent_id, device, root, _ = entries[top]
    above = entries.get(parent_id)
    if above is None or above[1] != device:
        return False
    expected = os.path.normpath(os.path.join(above[2], os.path.relpath(target, above[3])))
    return root == expected


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class DockerEngine(Component):
    """A ``dockerd`` this launcher starts, owning ``data_root``."""

    name = "docker"

    def __init__(self, state: StateDir, data_root: Path | None = None, *, name: str = "docker") -> None:
        super().__init__(state)
        self.name = name
        self.data_root = Path(data_root or state.data("docker")).expanduser().absolute()
        self.key = engine_key(str(self.data_root))
        self.run_dir = run_base() / self.key

    # -- paths ---------------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def host(self) -> str:
        """The engine address, for ``DOCKER_HOST`` / ``CORRAL_DOCKER_HOST``."""
        return f"unix://{self.socket}"

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def daemon_pid_file(self) -> Path:
        return self.run_dir / "dockerd.pid"

    @property
    def config_file(self) -> Path:
        return self.run_dir / "daemon.json"

    @property
    def owner_file(self) -> Path:
        return self.run_dir / "owner"

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "lock"

    @property
    def build_lock_file(self) -> Path:
        return self.run_dir / "build.lock"

    # -- identity ------------------------------------------------------------------------

    def marker(self) -> str:
        return str(self.socket)

    def recorded_pid(self) -> int | None:
        pid = processes.read_pid_file(self.daemon_pid_file)
        return pid if pid is not None else processes.read_pid_file(self.pid_file)

    def owned(self) -> bool:
        """True when this state directory started the running engine (and so stops it)."""
        pid = self.pid()
        return pid is not None and processes.read_pid_file(self.pid_file) == pid

    def owner(self) -> str:
        try:
            return self.owner_file.read_text().strip() or "?"
        except FileNotFoundError:
            return "?"

    def starting(self) -> str:
        return f"starting dockerd (data {self.data_root})"

    def describe(self) -> str:
        where = f"{self.host} (data {self.data_root})"
        if self.is_running() and not self.owned():
            return f"{where}, shared: started by {self.owner()}"
        return where

    def argv(self, dockerd: str) -> list[str]:
        namespace = f"corral-{self.key}"
        return [
            dockerd,
            f"--host=unix://{self.socket}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.daemon_pid_file}",
            f"--config-file={self.config_file}",
            # a system containerd (/run/containerd) would be used instead of dockerd's own one:
            # keep our containers in our own namespaces there
            f"--containerd-namespace={namespace}",
            f"--containerd-plugins-namespace={namespace}-plugins",
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            f"--shutdown-timeout={CONTAINER_SHUTDOWN_TIMEOUT}",
        ]

    # -- lifecycle -----------------------------------------------------------------------

    def launch(self) -> None:
        if os.geteuid() != 0:
            raise DevstackError(
                "the Docker engine (dockerd) needs root: run as root, "
                "or set CORRAL_DOCKER_HOST to a Docker engine that runs elsewhere "
                "(or run without sandboxes: corral-dev up --no-docker, CORRAL_DOCKER=0)"
            )
        dockerd = find_dockerd()
        run_base().mkdir(parents=True, exist_ok=True, mode=0o700)
        self.run_dir.mkdir(exist_ok=True, mode=0o700)
        with file_lock(self.lock_file):
            if self.is_running():  # another stack on the same data root started it meanwhile
                log.info("dockerd for %s is already running (started by %s)", self.data_root, self.owner())
                return
            # a pid file left by a killed dockerd could name a recycled pid: dockerd would refuse
            self.daemon_pid_file.unlink(missing_ok=True)
            # and its containerd dies with it, but stays a zombie until init reaps it: dockerd
            # would take that for a live containerd, wait for it and give up. Start a fresh one
            # (it reconnects to running containers).
            self._stop_leftover_containerd()
            (self.exec_root / "containerd" / "containerd.pid").unlink(missing_ok=True)
            self.config_file.write_text("{}\n")
            self.data_root.mkdir(parents=True, exist_ok=True)
            env = process_environment()
            env["PATH"] = system_path(env.get("PATH"))
            env.pop("DOCKER_HOST", None)
            processes.spawn(self.argv(dockerd), env=env, log_path=self.log_file, pid_path=self.pid_file)
            self.owner_file.write_text(f"{self.state.root}\n")

    def wait_ready(self, deadline: float) -> None:
        self.poll_until(
            lambda: True if ping(self.host) else None,
            deadline=deadline,
            what=f"GET /_ping on {self.host} never answered",
        )

    def stop(self, timeout: float = DOCKER_STOP_TIMEOUT) -> None:
        """Stop the engine if this state directory started it; a shared one is left running."""
        pid = self.pid()
        if pid is not None and not self.owned():
            log.info("leaving dockerd pid %d running (started by %s)", pid, self.owner())
            return
        ours = pid is not None or self.pid_file.exists()  # running, or started here and died
        if pid is not None:
            processes.terminate_all([pid], timeout=max(timeout, DOCKER_STOP_TIMEOUT))
        if ours:
            self._stop_leftover_containerd()
            if not self.is_running():
                # dockerd leaves its host-network namespace mount (exec/netns/default) behind,
                # and a killed one the data root bound onto itself
                unmount_under(self.exec_root)
                if is_self_bind_mount(self.data_root):
                    subprocess.run(["umount", str(self.data_root)], capture_output=True, check=False)
        processes.remove_pid_file(self.pid_file)
        if pid is not None:
            self.owner_file.unlink(missing_ok=True)

    def _stop_leftover_containerd(self) -> None:
        """dockerd stops its containerd on SIGTERM; after a SIGKILL it may be left running."""
        containerd_dir = self.exec_root / "containerd"
        pid = processes.read_pid_file(containerd_dir / "containerd.pid")
        if pid is not None and processes.is_alive(pid, str(containerd_dir)):
            log.warning("stopping containerd pid %d left behind by dockerd", pid)
            processes.terminate_all([pid], timeout=10.0)


class ExternalDockerEngine(Component):
    """An engine given by ``CORRAL_DOCKER_HOST``: nothing is started or stopped, it is only pinged."""

    name = "docker"

    def __init__(self, state: StateDir, host: str) -> None:
        super().__init__(state)
        self.host = host

    @property
    def build_lock_file(self) -> Path:
        return run_base() / engine_key(self.host) / "build.lock"

    def pid(self) -> int | None:
        return None

    def is_running(self) -> bool:
        return ping(self.host)

    def launch(self) -> None:
        return None

    def check_alive(self) -> None:
        return None

    def wait_ready(self, deadline: float) -> None:
        try:
            self.poll_until(
                lambda: True if ping(self.host) else None,
                deadline=deadline,
                what=f"GET /_ping on {self.host} never answered",
            )
        except ReadinessTimeoutError:
            raise DevstackError(
                f"docker: no Docker engine answers at CORRAL_DOCKER_HOST={self.host}; "
                "start it, or unset CORRAL_DOCKER_HOST to let corral-dev run its own dockerd"
            ) from None

    def stop(self, timeout: float = 10.0) -> None:  # noqa: ARG002 - nothing of ours to stop
        return None

    def describe(self) -> str:
        return f"external (CORRAL_DOCKER_HOST={self.host})"

    def status(self) -> ComponentStatus:
        return ComponentStatus(self.name, self.is_running(), None, self.describe())
