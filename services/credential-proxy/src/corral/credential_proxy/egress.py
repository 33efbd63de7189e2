"""Every session's egress proxy in this process: open, close, and restore after a restart.

Each session's proxy listens on its own unix socket, ``<socket_dir>/<session_id>/proxy.sock``
(``CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR``); without a ``socket_dir`` this deployment serves no egress and
``open`` raises ``NotConfigured``. ``Egress.running()`` owns one task group; each session's
``Listener.serve`` is a task in it, and leaving the block stops every proxy and removes its socket
file (the directories stay, for the running sandboxes that mount them, and the grants stay on the
bus for the next start). Opening and closing are serialized by one lock: they are rare, quick (a
bind and a KV write), and a session's open racing its close must end in one state or the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from corral.contracts import ids
from corral.contracts.egress import EGRESS_SOCKET_NAME, SESSION_ID_PATTERN, CredentialHostFailure, EgressPolicy
from corral.credential_proxy.destinations import Open, OwnAddresses, Resolve, open_tcp, system_resolve
from corral.credential_proxy.egress_credentials import EgressCredentials, SandboxCredentials
from corral.credential_proxy.gitproxy import GitProxy
from corral.credential_proxy.grants import Grants, UnreadableGrant
from corral.credential_proxy.listener import MAX_SOCKET_PATH, CannotListen, Listener, remove_directory
from corral.credential_proxy.proxy import SessionProxy
from corral.credential_proxy.settings import EgressSettings

logger = logging.getLogger(__name__)

#: What ``open`` answers, and health reports, when ``CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR`` is unset.
NOT_CONFIGURED: Final = (
    "egress is not configured in this deployment: the credential-proxy has no "
    "CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR; set it to a directory on the sandboxes' host to give sandboxes "
    "network access"
)


class ShuttingDown(Exception):
    """The credential-proxy is stopping and opens no more proxies."""


class NotConfigured(Exception):
    """This deployment serves no egress (``CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR`` is unset)."""


@dataclass
class _Running:
    listener: Listener
    task: asyncio.Task[None]


class Egress:
    def __init__(
        self,
        settings: EgressSettings,
        grants: Grants,
        *,
        own_addresses: OwnAddresses,
        resolve: Resolve = system_resolve,
        open_connection: Open = open_tcp,
        git: GitProxy | None = None,
        credentials: EgressCredentials | None = None,
        upstream_tls: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._git = git
        self._credentials = credentials
        self._upstream_tls = upstream_tls
        self._grants = grants
        self._own_addresses = own_addresses
        self._resolve = resolve
        self._open = open_connection
        self._sessions: dict[str, _Running] = {}
        self._lock = asyncio.Lock()
        self._tasks: asyncio.TaskGroup | None = None

    @property
    def configured(self) -> bool:
        """Whether this deployment serves egress (``CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR`` is set)."""
        return self._settings.socket_dir is not None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Egress]:
        """Serve proxies while the block runs; on exit every proxy and connection is closed.

        Raises:
            CannotListen: ``socket_dir`` cannot be made, or is too long to hold a session's socket.
        """
        if self._settings.socket_dir is not None:
            _prepare(self._settings.socket_dir)
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            try:
                yield self
            finally:
                self._tasks = None
                async with self._lock:
                    for running in self._sessions.values():
                        running.task.cancel()
                    for running in self._sessions.values():
                        await _stopped(running)
                    self._sessions.clear()

    def count(self) -> int:
        """Proxies listening now."""
        return len(self._sessions)

    async def open(self, session_id: str, policy: EgressPolicy) -> Listener:
        """Give the session a proxy on its socket, or apply ``policy`` to the one it has.

        Raises:
            NotConfigured: this deployment serves no egress.
            CannotListen: the session's directory or socket cannot be made.
            ShuttingDown: the service is stopping.
        """
        async with self._lock:
            directory = self._directory(session_id)
            current = self._sessions.get(session_id)
            if current is not None and current.listener.in_place():
                await self._grants.put(session_id, policy)
                current.listener.proxy.policy = policy
                return current.listener
            if current is not None:  # its socket file was removed (a cleaner of temporary files): make it again
                logger.warning("egress socket gone; making it again", extra={"fields": {"session_id": session_id}})
                await self._stop(session_id, remove=False)
            listener = self._start(session_id, directory, policy)
            try:
                await self._grants.put(session_id, policy)
            except BaseException:
                await self._stop(session_id, remove=True)
                raise
            logger.info(
                "egress opened",
                extra={"fields": {"session_id": session_id, "socket": str(listener.path), **_describe(policy)}},
            )
            return listener

    async def sandbox_credentials(self, session_id: str, policy: EgressPolicy) -> SandboxCredentials:
        """What the session's sandbox is given for its credentials at egress: placeholders and its CA.

        Raises:
            SecretStoreUnavailable, ApiError: the session's vaults cannot be read now.
        """
        if self._credentials is None:
            return SandboxCredentials({}, None)
        return await self._credentials.environment(session_id, policy)

    def take_failures(self, session_id: str) -> list[CredentialHostFailure]:
        """The session's credential hosts its sandbox could not reach since the last take (then forgotten)."""
        if self._credentials is None:
            return []
        return self._credentials.take_failures(session_id)

    async def close(self, session_id: str) -> bool:
        """Stop the session's proxy, delete its socket and directory, forget its grant; ``False`` when it had
        neither a proxy nor a grant."""
        async with self._lock:
            stopped = await self._stop(session_id, remove=True)
            if not stopped and self._settings.socket_dir is not None:  # a grant not served, or a crash's leftovers
                remove_directory(self._directory(session_id), session_id=session_id)
            forgotten = await self._grants.delete(session_id)
            if self._credentials is not None:
                self._credentials.forget(session_id)
        if stopped or forgotten:
            logger.info("egress closed", extra={"fields": {"session_id": session_id}})
        return stopped or forgotten

    async def restore(self) -> int:
        """Listen again, on a new socket in the same directory, for every grant on the bus this host
        serves (``Grants.mine``); the number restored. A grant that cannot be served now is kept for a
        later start; one that does not load is dropped. Without a ``socket_dir`` nothing is served and
        every grant is kept."""
        restored = skipped = 0
        async with self._lock:
            sessions = await self._grants.sessions()
            if self._settings.socket_dir is None:
                if sessions:
                    logger.warning(
                        "egress grants not served: CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR is unset",
                        extra={"fields": {"grants": len(sessions)}},
                    )
                return 0
            for session_id in sessions:
                try:
                    grant = await self._grants.get(session_id)
                except UnreadableGrant as exc:
                    logger.warning(
                        "egress grant dropped", extra={"fields": {"session_id": session_id, "reason": str(exc)}}
                    )
                    await self._grants.delete(session_id)
                    continue
                if grant is None or session_id in self._sessions:
                    continue
                if not self._grants.mine(grant):  # another machine's socket: its credential-proxy serves it
                    skipped += 1
                    continue
                try:
                    self._start(session_id, self._directory(session_id), grant.policy)
                except CannotListen as exc:
                    logger.warning(
                        "egress grant kept but not served",
                        extra={"fields": {"session_id": session_id, "reason": str(exc)}},
                    )
                    continue
                restored += 1
        logger.info("egress grants restored", extra={"fields": {"restored": restored, "other_hosts": skipped}})
        return restored

    def _directory(self, session_id: str) -> Path:
        if self._settings.socket_dir is None:
            raise NotConfigured(NOT_CONFIGURED)
        if re.fullmatch(SESSION_ID_PATTERN, session_id) is None:  # it names a directory: never a path
            raise CannotListen(f"{session_id!r} is not a session id")
        return self._settings.socket_dir / session_id

    def _start(self, session_id: str, directory: Path, policy: EgressPolicy) -> Listener:
        if self._tasks is None:
            raise ShuttingDown("the credential-proxy is stopping; open the session's egress again shortly")
        proxy = SessionProxy(
            session_id,
            policy,
            self._settings,
            resolve=self._resolve,
            open_connection=self._open,
            own_addresses=self._own_addresses,
            git=self._git,
            credentials=self._credentials,
            upstream_tls=self._upstream_tls,
        )
        listener = Listener.bind(proxy, directory)
        task = self._tasks.create_task(listener.serve(), name=f"egress-{session_id}")
        self._sessions[session_id] = _Running(listener, task)
        return listener

    async def _stop(self, session_id: str, *, remove: bool) -> bool:
        running = self._sessions.pop(session_id, None)
        if running is None:
            return False
        running.task.cancel()
        await _stopped(running)
        if remove:
            running.listener.remove()
        return True


async def _stopped(running: _Running) -> None:
    """Wait for a cancelled proxy task to finish, without taking its cancellation as ours."""
    await asyncio.wait([running.task])
    running.listener.close()  # a task cancelled before it ever ran never closed it


def _prepare(socket_dir: Path) -> None:
    """Make ``socket_dir`` (0755) if missing, and check a session's socket path fits in it."""
    needed = len(ids.new_id(ids.SESSION))
    longest = MAX_SOCKET_PATH - len(f"/{'x' * needed}/{EGRESS_SOCKET_NAME}")
    if len(os.fsencode(socket_dir)) > longest:
        raise CannotListen(
            f"CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR={socket_dir} is too long: a session's socket, "
            f"<CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR>/<session_id>/{EGRESS_SOCKET_NAME}, must fit in "
            f"{MAX_SOCKET_PATH} bytes "
            f"with a {needed}-character session id; use a directory path of at most {longest} bytes"
        )
    try:
        socket_dir.mkdir(mode=0o755, parents=True)
    except FileExistsError:
        if not socket_dir.is_dir():
            raise CannotListen(
                f"CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR={socket_dir} exists and is not a directory"
            ) from None
    except OSError as exc:
        raise CannotListen(
            f"cannot make CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR={socket_dir}: {exc.strerror or exc}"
        ) from None
    else:
        socket_dir.chmod(0o755)  # whatever the umask


def _describe(policy: EgressPolicy) -> dict[str, object]:
    hosts = "any public host" if policy.allowed_hosts is None else len(policy.allowed_hosts)
    return {"allowed_hosts": hosts, "allow_package_managers": policy.allow_package_managers}
