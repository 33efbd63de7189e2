"""The sandbox base image (``infra/sandbox-image/``), built into a Docker engine once per content.

The tag is content-addressed: ``corral-sandbox:<first 12 hex of sha256 over Dockerfile, rootfs.sh
and packages.txt>``. When the engine already has that tag nothing is built (the engine's data root
is the cache). Otherwise, by ``CORRAL_SANDBOX_BUILD``:

- ``debootstrap`` (the default when ``CORRAL_SANDBOX_BASE`` is unset; no registry needed): ``rootfs.sh``
  makes a Debian root filesystem (about a minute), it is imported as ``corral-sandbox-base:<hash>``,
  and the Dockerfile is built ``FROM`` it;
- ``dockerfile``: the Dockerfile is built ``FROM $CORRAL_SANDBOX_BASE`` (default
  ``debian:bookworm-slim``), pulled from a registry if missing;
- ``auto`` (default): ``dockerfile`` when ``CORRAL_SANDBOX_BASE`` is set and present or pullable
  within a few seconds, else ``debootstrap``.

``CORRAL_SANDBOX_IMAGE=<name:tag>`` skips all of it and uses that image (it must be in the engine).
Every step's output goes to ``<state>/logs/sandbox-image.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import docker
from docker.errors import DockerException, ImageNotFound

from corral.devstack import processes
from corral.devstack.configuration import ImageSettings, process_environment
from corral.devstack.docker_engine import docker_client, system_path, unmount_under
from corral.devstack.errors import DevstackError
from corral.devstack.progress import Progress, step

log = logging.getLogger(__name__)

NAME = "sandbox-image"
IMAGE_REPOSITORY = "corral-sandbox"
BASE_REPOSITORY = "corral-sandbox-base"
HASHED_FILES = ("Dockerfile", "rootfs.sh", "packages.txt")
DEFAULT_BASE = "debian:bookworm-slim"
PULL_PROBE_TIMEOUT = 15.0
LOG_TAIL_LINES = 30


def content_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in HASHED_FILES:
        path = directory / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DevstackError(
                f"{path} is missing: the sandbox image is built from infra/sandbox-image/ "
                "(set CORRAL_SANDBOX_IMAGE_DIR to where it is, or CORRAL_SANDBOX_IMAGE to an image to use)"
            ) from None
        digest.update(name.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()[:12]


def image_tag(settings: ImageSettings) -> str:
    """The image services are told to use: ``CORRAL_SANDBOX_IMAGE`` or the content tag."""
    return settings.explicit or f"{IMAGE_REPOSITORY}:{content_hash(settings.directory)}"


def base_image_tag(settings: ImageSettings) -> str:
    """What the offline path imports its root filesystem as."""
    return f"{BASE_REPOSITORY}:{content_hash(settings.directory)}"


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except ImageNotFound:
        return False
    return True


def remove_rootfs(path: Path) -> None:
    """Delete a (possibly half-made) root filesystem, never following a mount out of it
    (debootstrap bind-mounts /dev entries when it runs in a container)."""
    left = unmount_under(path)
    if left:
        raise DevstackError(f"not deleting {path}: still mounted there: {', '.join(left)}")
    shutil.rmtree(path, ignore_errors=True)


def copy_image(source: str, target: str, image: str) -> None:
    """Load ``image`` from the engine at ``source`` into the one at ``target`` (``docker save | docker
    load``) unless it has it: a sandbox host's engine gets the image the first engine built."""
    into = docker.DockerClient(base_url=target, timeout=600)
    try:
        if image_exists(into, image):
            return
        out = docker.DockerClient(base_url=source, timeout=600)
        try:
            into.images.load(b"".join(out.api.get_image(image)))
        finally:
            out.close()
    finally:
        into.close()


class ImageBuilder:
    """Builds the sandbox image into the engine at ``host`` unless its tag is there already."""

    def __init__(
        self,
        host: str,
        settings: ImageSettings,
        *,
        log_path: Path,
        lock_path: Path,
        progress: Progress,
        work_dir: Path | None = None,
    ) -> None:
        self.host = host
        self.settings = settings
        self.log_path = log_path
        self.lock_path = lock_path
        self.progress = progress
        self.work_dir = work_dir

    def _say(self, what: str) -> None:
        self.progress(f"{NAME:<17} {what}")

    def _step(self, what: str) -> None:
        self.progress(f"{'':<17}   {what}")

    def _running(self, what: str) -> contextlib.AbstractContextManager[None]:
        """A long step of the build, shown while it runs (its outcome is a ``_step`` line)."""
        return step(self.progress, f"{NAME:<17} {what}")

    def _log(self, text: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")

    def _fail(self, what: str) -> DevstackError:
        tail = processes.tail(self.log_path, LOG_TAIL_LINES)
        return DevstackError(f"{NAME}: {what}; last lines of {self.log_path}:\n{tail}")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One build per engine at a time (two stacks sharing a data root, or a CLI and a test)."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.lock_path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._say(f"waiting for another build of the image (lock {self.lock_path})")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ensure(self, *, rebuild: bool = False) -> str:
        """The image tag, after building it if the engine lacks it (or ``rebuild``)."""
        tag = image_tag(self.settings)
        began = time.monotonic()
        try:
            client = docker_client(self.host, self.settings.timeout)
        except (DockerException, OSError) as exc:
            raise DevstackError(f"{NAME}: no Docker engine answers at {self.host}: {exc}") from None
        try:
            if self.settings.explicit:
                if not image_exists(client, tag):
                    raise DevstackError(
                        f"{NAME}: CORRAL_SANDBOX_IMAGE={tag} is not in the engine at {self.host}; "
                        "build or load it there, or unset CORRAL_SANDBOX_IMAGE to build corral-sandbox"
                    )
                self._say(f"{'given':<16} {tag} (CORRAL_SANDBOX_IMAGE)")
                return tag
            if not rebuild and image_exists(client, tag):
                self._say(f"{'cached':<16} {tag}")
                return tag
            with self._locked():
                if not rebuild and image_exists(client, tag):  # built by whoever held the lock
                    self._say(f"{'cached':<16} {tag}")
                    return tag
                self._build(client, tag, rebuild=rebuild)
        finally:
            client.close()
        self._say(f"{f'built in {time.monotonic() - began:.1f}s':<16} {tag}")
        return tag

    # -- the two paths -------------------------------------------------------------------

    def _choose(self, client: docker.DockerClient) -> tuple[str, str]:
        """(path, base image): ('dockerfile', base) or ('debootstrap', imported base tag)."""
        mode = self.settings.mode
        if mode == "debootstrap":
            return "debootstrap", base_image_tag(self.settings)
        base = self.settings.base or DEFAULT_BASE
        if mode == "dockerfile":
            if not image_exists(client, base):
                self._pull(base, timeout=self.settings.timeout, required=True)
            return "dockerfile", base
        if self.settings.base is None:  # auto without a base: offline by default
            return "debootstrap", base_image_tag(self.settings)
        if image_exists(client, base) or self._pull(base, timeout=PULL_PROBE_TIMEOUT, required=False):
            return "dockerfile", base
        self._step(f"{base} cannot be pulled (no registry?): using debootstrap")
        return "debootstrap", base_image_tag(self.settings)

    def _pull(self, ref: str, *, timeout: float, required: bool) -> bool:
        t0 = time.monotonic()
        self._step(f"pulling {ref}")
        repository, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
        try:
            client = docker_client(self.host, timeout)
            try:
                with self._running(f"pulling {ref}"):
                    client.images.pull(repository, tag=tag)
            finally:
                client.close()
        except (DockerException, OSError) as exc:
            self._log(f"pull {ref} failed: {exc}")
            if required:
                raise self._fail(f"cannot pull {ref} (CORRAL_SANDBOX_BUILD=dockerfile needs a registry)") from None
            return False
        self._step(f"pull done in {time.monotonic() - t0:.1f}s")
        return True

    def _build(self, client: docker.DockerClient, tag: str, *, rebuild: bool) -> None:
        path, base = self._choose(client)
        if path == "debootstrap":
            self._say(f"building {tag} offline (debootstrap, about a minute; log {self.log_path})")
            if rebuild or not image_exists(client, base):
                self._import_rootfs(client, base)
            else:
                self._step(f"{base} already imported")
        else:
            self._say(f"building {tag} from {base} (log {self.log_path})")
        with self._running(f"docker build of {tag}"):
            network = "none" if path == "debootstrap" else "host"
            self._docker_build(client, tag, base, network=network, nocache=rebuild)

    def _import_rootfs(self, client: docker.DockerClient, base: str) -> None:
        work_dir = self.work_dir or (Path("/var/tmp") if Path("/var/tmp").is_dir() else None)
        scratch = Path(tempfile.mkdtemp(prefix="corral-rootfs-", dir=work_dir))
        rootfs = scratch / "rootfs"
        try:
            self._debootstrap(rootfs)
            with self._running(f"importing it as {base}"):
                self._import(client, rootfs, base)
        finally:
            t0 = time.monotonic()
            with self._running(f"removing the scratch root file system {scratch}"):
                remove_rootfs(scratch)
            self._step(f"scratch removed in {time.monotonic() - t0:.1f}s")

    def _debootstrap(self, rootfs: Path) -> None:
        if os.geteuid() != 0:
            raise DevstackError(
                f"{NAME}: debootstrap needs root; run as root, or build from a registry with "
                "CORRAL_SANDBOX_BUILD=dockerfile (CORRAL_SANDBOX_BASE=debian:bookworm-slim)"
            )
        env = process_environment()
        env["PATH"] = system_path(env.get("PATH"))
        env["CORRAL_DEBIAN_MIRROR"] = self.settings.mirror
        if shutil.which("debootstrap", path=env["PATH"]) is None:
            raise DevstackError(
                f"{NAME}: debootstrap is not installed: run `apt-get install -y debootstrap` (as root), "
                "or set CORRAL_SANDBOX_BASE to a base image a registry serves"
            )
        t0 = time.monotonic()
        with self._running("debootstrap: a Debian root file system, offline"):
            self._run(["bash", str(self.settings.directory / "rootfs.sh"), str(rootfs)], env=env, what="rootfs.sh")
        self._step(f"debootstrap done in {time.monotonic() - t0:.1f}s")

    def _run(self, argv: list[str], *, env: Mapping[str, str], what: str) -> None:
        self._log(f"--- corral-dev: {' '.join(argv)}")
        with self.log_path.open("ab") as log_file:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
            )
        try:
            code = child.wait(timeout=self.settings.timeout)
        except BaseException:
            # timeout or Ctrl-C: stop the whole group we started (debootstrap, its dpkg, ...)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, 9)
            child.wait()
            raise
        if code != 0:
            raise self._fail(f"{what} failed (exit {code})")

    def _import(self, client: docker.DockerClient, rootfs: Path, base: str) -> None:
        t0 = time.monotonic()
        repository, _, tag = base.rpartition(":")
        with self.log_path.open("ab") as log_file:
            tar = subprocess.Popen(
                ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
            )
        assert tar.stdout is not None
        try:
            result = client.api.import_image_from_stream(_chunks(tar.stdout), repository=repository, tag=tag)
        except (DockerException, OSError) as exc:
            tar.kill()
            tar.wait()
            raise self._fail(f"docker import failed: {exc}") from None
        finally:
            tar.stdout.close()
        if tar.wait() != 0:
            raise self._fail(f"tar of {rootfs} failed (exit {tar.returncode})")
        self._log(f"docker import: {str(result).strip()}")
        if not image_exists(client, base):
            raise self._fail(f"docker import did not produce {base}")
        self._step(f"import done in {time.monotonic() - t0:.1f}s")

    def _docker_build(self, client: docker.DockerClient, tag: str, base: str, *, network: str, nocache: bool) -> None:
        t0 = time.monotonic()
        self._log(f"--- corral-dev: docker build --build-arg BASE={base} -t {tag} {self.settings.directory}")
        try:
            stream: Iterator[dict[str, Any]] = client.api.build(
                path=str(self.settings.directory),
                tag=tag,
                buildargs={"BASE": base},
                network_mode=network,
                rm=True,
                forcerm=True,
                pull=False,
                nocache=nocache,
                decode=True,
            )
            for chunk in stream:
                if "stream" in chunk:
                    self._log(str(chunk["stream"]))
                elif "error" in chunk:
                    self._log(str(chunk["error"]))
                    raise self._fail(f"docker build failed: {str(chunk['error']).strip()}")
                elif "status" in chunk:
                    self._log(str(chunk["status"]))
        except (DockerException, OSError) as exc:
            raise self._fail(f"docker build failed: {exc}") from None
        if not image_exists(client, tag):
            raise self._fail(f"docker build did not produce {tag}")
        self._step(f"docker build done in {time.monotonic() - t0:.1f}s")


def _chunks(stream: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while True:
        block = stream.read(size)
        if not block:
            return
        yield block
