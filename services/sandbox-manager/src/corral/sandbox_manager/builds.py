"""One environment image build: a build container run from the base image, then committed.

Nothing is built with ``docker build``: its ``RUN`` steps would need a network that reaches the
package registries, and the only such network an engine started with ``--bridge=none`` has is
``host``, where the packages' own install scripts (run as root) could reach every service on the
host's loopback. A build container instead is as cut off as a sandbox, with a few capabilities
more because the package managers run as root:

- network ``none`` (loopback only); its one way out is the build's egress proxy in the
  credential-proxy, whose directory (holding only the proxy's socket) is mounted read-only at
  ``SANDBOX_EGRESS_DIR``; the exec agent relays ``127.0.0.1:SANDBOX_PROXY_PORT`` to it and the
  install steps get ``HTTP_PROXY``/``HTTPS_PROXY`` (both spellings) pointing there, and the proxy
  lets the build reach the public package registries and nothing else;
- root (uid 0) but every capability dropped except ``BUILD_CAPABILITIES``, which apt, dpkg and pip
  need (owners and modes of installed files, apt dropping to its ``_apt`` user to download);
  ``no-new-privileges``, the default seccomp profile, pids and memory (= swap) and CPU limits, a
  private IPC namespace, no log driver;
- labelled ``corral.build.scope=<scope>`` and ``corral.build.id=<build id>`` and never
  ``corral.managed``, so nothing that looks after sandboxes ever lists it, and a manager removes the
  ones a previous run left (``EnvironmentImages.sweep``).

Its command is the exec agent in build mode (``agent/program/build.py``: the relay, then
``bash -euo pipefail -c <script>``). Its output (stdout and stderr, read through an attach made
before the start, so no line is lost) is passed on line by line as it comes. Exit code 0: the
container is committed as the image, with the config a sandbox needs (``USER sandbox``,
``WORKDIR /workspace``, the base image's ``Env`` and ``Cmd``, the image's labels); any other code is
a ``BuildError`` carrying it. The container is removed in every case. ``docker commit`` copies a
container's labels into the image, so the image's config sets the build labels to empty: neither
the image nor a sandbox made from it is ever taken for a build container.

Each build runs on its own engine connection in a worker thread; ``Build.stop`` (any thread) cuts
the output stream, which wakes that thread at once, and the container is then removed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import socket
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Final

import docker
from docker.errors import DockerException, NotFound
from docker.types import LogConfig

from corral.contracts.egress import SANDBOX_EGRESS_DIR
from corral.sandbox_manager import agent
from corral.sandbox_manager.egress import EgressMount

logger = logging.getLogger(__name__)

#: Container labels of a build container (set to empty in the image it becomes).
LABEL_BUILD_SCOPE: Final = "corral.build.scope"
LABEL_BUILD_ID: Final = "corral.build.id"
#: What the install steps need as root beyond an unprivileged process: chown and chmod of the files
#: they install whoever owns them (CHOWN, FOWNER, FSETID keeps setuid bits, DAC_OVERRIDE), and
#: apt's switch to its ``_apt`` user for downloads (SETUID, SETGID). Everything else is dropped.
BUILD_CAPABILITIES: Final = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID")
#: The config the image is committed with besides the base image's ``Env``/``Cmd``.
IMAGE_USER: Final = "sandbox"
IMAGE_WORKDIR: Final = "/workspace"

#: Terminal colours and cursor moves some tools print (pip colours its errors red).
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: A stream frame's header on an attach without a TTY: stream (1 stdout, 2 stderr), 3 zero bytes, size.
_FRAME_HEADER: Final = 8
_STREAMS: Final = (1, 2)
#: Longest line kept whole (the rest of a longer one is dropped).
_MAX_LINE: Final = 64 * 1024


class BuildError(Exception):
    """The build ran and failed: ``exit_code`` is the script's (``None``: it never ran to an exit),
    ``out_of_memory`` whether the engine killed it for its memory limit; ``str()`` says what happened."""

    def __init__(self, message: str, exit_code: int | None = None, *, out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.out_of_memory = out_of_memory


class BuildStopped(Exception):
    """``Build.stop`` was called: the container was removed and nothing was committed."""


@dataclass(frozen=True)
class BuildLimits:
    """The build container's resources (``CORRAL_SANDBOX_ENVIRONMENT_BUILD_*``)."""

    memory: str
    nano_cpus: int
    pids: int


@dataclass(frozen=True)
class BuildJob:
    """One build container: what it runs, where its output goes, and what it is committed as."""

    #: Names the build: its container's name and its ``corral.build.id`` label (``build-<hex>``).
    build_id: str
    name: str
    scope: str
    base: str
    #: ``repository:tag`` the container is committed as.
    tag: str
    script: str
    egress: EgressMount
    limits: BuildLimits
    #: The image's labels (the build labels are blanked beside them).
    image_labels: Mapping[str, str]
    #: Files put into the container before it starts (absolute path -> content), e.g. CA certificates.
    files: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def container_labels(self) -> dict[str, str]:
        return {LABEL_BUILD_SCOPE: self.scope, LABEL_BUILD_ID: self.build_id}

    def agent_config(self) -> str:
        """The exec agent's config: build mode, relaying to the egress socket, proxy variables set."""
        return json.dumps(
            {
                "build_script": self.script,
                "build_environment": {**self.egress.environment(), "DEBIAN_FRONTEND": "noninteractive"},
                "egress_socket": self.egress.socket_in_sandbox,
            }
        )

    def host_config(self, api: docker.APIClient) -> dict[str, Any]:
        return dict(
            api.create_host_config(
                cap_drop=["ALL"],
                cap_add=list(BUILD_CAPABILITIES),
                security_opt=["no-new-privileges"],
                network_mode="none",
                binds=[f"{self.egress.host_directory}:{SANDBOX_EGRESS_DIR}:ro"],
                pids_limit=self.limits.pids,
                mem_limit=self.limits.memory,
                memswap_limit=self.limits.memory,
                nano_cpus=self.limits.nano_cpus,
                log_config=LogConfig(type="none"),
                ipc_mode="private",
                init=False,
            )
        )

    def image_config(self, base_config: Mapping[str, Any]) -> dict[str, Any]:
        """What the image is committed with: the base's ``Env`` and ``Cmd``, the sandbox's user and
        workdir, the image's labels and the build labels blanked (``docker commit`` would otherwise
        copy the container's into it)."""
        labels = {**self.image_labels, LABEL_BUILD_SCOPE: "", LABEL_BUILD_ID: ""}
        # An empty Cmd would be filled from the container's (the exec agent's whole source).
        cmd = list(base_config.get("Cmd") or []) or ["/bin/bash"]
        return {
            "User": IMAGE_USER,
            "WorkingDir": IMAGE_WORKDIR,
            "Env": list(base_config.get("Env") or []),
            "Cmd": cmd,
            "Labels": labels,
        }


class Build:
    """What one build's thread shares with the event loop: whether it was stopped, and the output
    stream ``stop`` cuts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = False
        self._sock: socket.socket | None = None

    @property
    def stopped(self) -> bool:
        return self._stopped

    def keep(self, sock: socket.socket) -> None:
        """The output stream, once attached (cut at once if ``stop`` came first)."""
        with self._lock:
            self._sock = sock
            stopped = self._stopped
        if stopped:
            _shut(sock)

    def stop(self) -> None:
        """Cut the output stream (any thread); the build's thread then removes the container."""
        with self._lock:
            self._stopped = True
            sock = self._sock
        if sock is not None:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class OutputLines:
    """Lines out of an attach stream without a TTY: frames of stdout and stderr, each split into lines
    of its own (a progress bar's ``\\r`` redraws keep only the last one; colours are dropped)."""

    def __init__(self) -> None:
        self._frames = bytearray()
        self._partial: dict[int, bytearray] = {stream: bytearray() for stream in _STREAMS}

    def feed(self, data: bytes) -> list[str]:
        self._frames += data
        lines: list[str] = []
        while len(self._frames) >= _FRAME_HEADER:
            stream = self._frames[0]
            size = int.from_bytes(self._frames[4:_FRAME_HEADER], "big")
            if len(self._frames) < _FRAME_HEADER + size:
                break
            payload = bytes(self._frames[_FRAME_HEADER : _FRAME_HEADER + size])
            del self._frames[: _FRAME_HEADER + size]
            partial = self._partial.get(stream, self._partial[1])
            partial += payload
            *complete, rest = partial.split(b"\n")
            if len(rest) > _MAX_LINE:  # a progress bar redrawn for ever, or one endless line
                rest = rest[rest.rfind(b"\r") + 1 :]
                if len(rest) > _MAX_LINE:
                    complete.append(rest[:_MAX_LINE])
                    rest = bytearray()
            partial[:] = rest
            lines += (line for raw in complete if (line := _line(bytes(raw))))
        return lines

    def close(self) -> list[str]:
        """What is left after the stream ended (a last line without a newline)."""
        lines = [line for partial in self._partial.values() if (line := _line(bytes(partial)))]
        for partial in self._partial.values():
            partial.clear()
        return lines


def _line(raw: bytes) -> str:
    # A terminal's lines end in \r\n (dpkg's output comes through apt's pty); a \r inside one is a
    # progress redraw, of which the last counts.
    text = _ESCAPES.sub("", raw.decode("utf-8", "replace")).rstrip()
    return text.rsplit("\r", 1)[-1].rstrip()


def files_tar(files: Mapping[str, bytes]) -> bytes:
    """``files`` (absolute path -> content) as an uncompressed tar to extract at ``/``; parent
    directories the image lacks are made by the engine."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(str(PurePosixPath(path).relative_to("/")))
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _attach(api: docker.APIClient, container_id: str) -> socket.socket:
    wrapped: Any = api.attach_socket(container_id, params={"stdout": 1, "stderr": 1, "stream": 1})
    raw = getattr(wrapped, "_sock", wrapped)
    if not isinstance(raw, socket.socket):
        wrapped.close()
        raise DockerException(
            "the Docker engine is reached over a transport this sandbox-manager cannot attach to "
            "(use a unix socket or plain tcp:// CORRAL_DOCKER_HOST)"
        )
    sock = raw.dup()
    response = getattr(wrapped, "_response", None)
    if response is not None:
        response.close()
    else:
        wrapped.close()
    raw.close()
    sock.settimeout(None)  # a step may print nothing for minutes; ``Build.stop`` ends the wait
    return sock


def _read(sock: socket.socket, build: Build) -> Iterator[bytes]:
    while not build.stopped:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        yield chunk


def _remove(api: docker.APIClient, container_id: str) -> None:
    try:
        api.remove_container(container_id, force=True, v=True)
    except NotFound:
        pass
    except (DockerException, OSError):
        # The build's outcome stands; the next sweep removes the container (it keeps its labels).
        logger.warning("could not remove a build container", extra={"fields": {"container": container_id}})


def run_build(
    client: docker.DockerClient, build: Build, job: BuildJob, *, on_line: Callable[[str], None], wait_s: float
) -> str:
    """Run ``job``'s build container through ``client`` and commit it; the image id. Blocking, for a
    worker thread; ``on_line`` gets every line of output as it arrives.

    Raises:
        BuildError: the script exited non-zero (``exit_code``), or was killed for lack of memory.
        BuildStopped: ``build.stop()`` was called.
        DockerException, OSError: the engine refused or the connection broke.
    """
    api = client.api
    # A container of this name is one an earlier run of this manager left (a build's name is its
    # scope and tag, and one build per tag runs at a time).
    with contextlib.suppress(NotFound):
        api.remove_container(job.name, force=True, v=True)
    base_config = dict(api.inspect_image(job.base).get("Config") or {})  # type: ignore[no-untyped-call]  # untyped in types-docker
    created = api.create_container(
        job.base,
        command=["python3", "-c", agent.source(), job.agent_config()],
        name=job.name,
        user="0:0",
        working_dir="/",
        stdin_open=False,
        detach=True,
        tty=False,
        labels=job.container_labels,
        host_config=job.host_config(api),
    )
    container_id = str(created["Id"])
    sock: socket.socket | None = None
    try:
        if job.files:
            api.put_archive(container_id, "/", files_tar(job.files))
        sock = _attach(api, container_id)
        build.keep(sock)
        if build.stopped:
            raise BuildStopped
        api.start(container_id)
        lines = OutputLines()
        for chunk in _read(sock, build):
            for line in lines.feed(chunk):
                on_line(line)
        for line in lines.close():
            on_line(line)
        if build.stopped:
            raise BuildStopped
        code = int(api.wait(container_id, timeout=int(wait_s) + 1).get("StatusCode", -1))
        if code != 0:
            state = api.inspect_container(container_id).get("State") or {}
            if state.get("OOMKilled"):
                raise BuildError(
                    f"the build ran out of memory (exit code {code}; its limit is {job.limits.memory}, "
                    "CORRAL_SANDBOX_ENVIRONMENT_BUILD_MEMORY)",
                    exit_code=code,
                    out_of_memory=True,
                )
            raise BuildError(f"the build script exited with code {code}", exit_code=code)
        committed = api.commit(
            container_id,
            repository=job.tag.rpartition(":")[0],
            tag=job.tag.rpartition(":")[2],
            conf=job.image_config(base_config),
            pause=False,
        )
        return str(committed["Id"])
    except (BuildError, BuildStopped):
        raise
    except Exception as exc:
        if build.stopped:
            raise BuildStopped from None
        if isinstance(exc, DockerException | OSError):
            raise
        # the SDK reads raw responses: urllib3's errors are not OSErrors
        raise OSError(f"the build's connection to the Docker engine broke: {exc}") from exc
    finally:
        if sock is not None:
            sock.close()
        _remove(api, container_id)
