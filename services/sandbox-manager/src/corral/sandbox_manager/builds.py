"""One ``docker build`` from a generated Dockerfile, on its own engine connection, stoppable from the
event loop.

The docker SDK streams a build's output over one HTTP response that a worker thread reads; the
engine cancels a build whose client goes away. ``Build.stop`` shuts that response's socket down,
which wakes the reading thread at once (closing the socket from another thread would not), so a
build that timed out, or a manager that is stopping, does not leave a thread blocked on an engine
that is busy compiling.

The build runs with network ``host``: the engine runs with ``--bridge=none``, so ``host`` is the only
network that reaches the package mirrors. The sandboxes built from the image never get it.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import tarfile
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

import docker
from docker.errors import DockerException

#: The network the build's ``RUN`` steps use (see the module docstring).
BUILD_NETWORK: Final = "host"

_EXIT_CODE = re.compile(r"returned a non-zero code: (\d+)")
#: Terminal colours and cursor moves some tools print (pip colours its errors red).
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class BuildError(Exception):
    """The engine ran the build and it failed; ``str()`` is the engine's message."""

    @property
    def exit_code(self) -> int | None:
        """The failing step's exit code, when the engine said it."""
        found = _EXIT_CODE.search(str(self))
        return int(found.group(1)) if found else None


class BuildStopped(Exception):
    """``Build.stop`` was called: the build's connection was cut and nothing was tagged by this call."""


class Build:
    """The state one build's thread shares with the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = False
        self._response: Any = None

    @property
    def stopped(self) -> bool:
        return self._stopped

    def keep(self, response: Any, *_args: Any, **_kwargs: Any) -> None:
        """``requests`` response hook: the build's streaming response, so ``stop`` can cut it."""
        with self._lock:
            self._response = response
            stopped = self._stopped
        if stopped:
            _shut(response)

    def stop(self) -> None:
        """Cut the build's connection (any thread); the engine then cancels the build."""
        with self._lock:
            self._stopped = True
            response = self._response
        if response is not None:
            _shut(response)

    def close(self) -> None:
        """Release the response (from the build's own thread)."""
        with self._lock:
            response, self._response = self._response, None
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()


def _shut(response: Any) -> None:
    # urllib3 2: the connection the body is read from, and its socket.
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def context_tar(dockerfile: str, files: Mapping[str, bytes]) -> bytes:
    """A build context: ``Dockerfile`` and ``files``, as an uncompressed tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in {"Dockerfile": dockerfile.encode(), **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def run_build(
    client: docker.DockerClient,
    build: Build,
    dockerfile: str,
    *,
    files: Mapping[str, bytes],
    tag: str,
    labels: Mapping[str, str],
    timeout_s: float,
    on_line: Callable[[str], None],
) -> str:
    """Build ``dockerfile`` with ``files`` beside it as ``tag`` through ``client`` and return the
    image id; blocking, for a worker thread. ``on_line`` gets every line of output as it arrives.

    Raises:
        BuildError: a step failed (the engine's message, e.g. ``returned a non-zero code: 100``).
        BuildStopped: ``build.stop()`` was called.
        DockerException, OSError: the engine refused the build or the connection broke.
    """
    api = client.api
    api.hooks["response"].append(build.keep)
    error: str | None = None
    image_id: str | None = None
    try:
        if build.stopped:
            raise BuildStopped
        stream = api.build(
            fileobj=io.BytesIO(context_tar(dockerfile, files)),
            custom_context=True,
            tag=tag,
            labels=dict(labels),
            network_mode=BUILD_NETWORK,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            timeout=int(timeout_s) + 1,
        )
        for chunk in stream:
            if build.stopped:
                break
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                detail = chunk.get("errorDetail")
                error = str((detail.get("message") if isinstance(detail, dict) else None) or chunk["error"])
            text = chunk.get("stream")
            if isinstance(text, str):
                for raw in _ESCAPES.sub("", text).splitlines():
                    line = raw.rsplit("\r", 1)[-1].rstrip()  # progress bars redraw with \r
                    if line:
                        on_line(line)
            aux = chunk.get("aux")
            if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
                image_id = aux["ID"]
    except (DockerException, OSError, BuildStopped):
        if build.stopped:
            raise BuildStopped from None
        raise
    except Exception as exc:  # the SDK reads the raw response: urllib3's errors are not OSErrors
        if build.stopped:
            raise BuildStopped from None
        raise OSError(f"the build's connection to the Docker engine broke: {exc}") from exc
    finally:
        build.close()
    if build.stopped:
        raise BuildStopped
    if error is not None:
        raise BuildError(error)
    if image_id is None:
        image_id = str(api.inspect_image(tag)["Id"])  # type: ignore[no-untyped-call]  # untyped in types-docker
    return image_id
