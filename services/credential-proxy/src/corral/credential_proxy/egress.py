"""Every session's egress proxy in this process: open, close, and restore after a restart.

``Egress.running()`` owns one task group; each session's ``Listener.serve`` is a task in it, and
leaving the block stops every proxy (the grants stay on the bus for the next start). Opening and
closing are serialized by one lock: they are rare, quick (a bind and a KV write), and a session's
open racing its close must end in one state or the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from corral.contracts.egress import EgressPolicy
from corral.credential_proxy.destinations import Open, Resolve, open_tcp, system_resolve
from corral.credential_proxy.grants import Grants, UnreadableGrant
from corral.credential_proxy.proxy import CannotListen, Listener, SessionProxy
from corral.credential_proxy.settings import EgressSettings

logger = logging.getLogger(__name__)


class ShuttingDown(Exception):
    """The credential-proxy is stopping and opens no more proxies."""


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
        resolve: Resolve = system_resolve,
        open_connection: Open = open_tcp,
    ) -> None:
        self._settings = settings
        self._grants = grants
        self._resolve = resolve
        self._open = open_connection
        self._sessions: dict[str, _Running] = {}
        self._lock = asyncio.Lock()
        self._tasks: asyncio.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Egress]:
        """Serve proxies while the block runs; on exit every proxy and connection is closed."""
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

    async def open(self, session_id: str, listen_host: str, policy: EgressPolicy) -> Listener:
        """Give the session a proxy on ``listen_host``, or update the policy of the one it has there.

        Raises:
            CannotListen: the address cannot be listened on.
            ShuttingDown: the service is stopping.
        """
        async with self._lock:
            current = self._sessions.get(session_id)
            if current is not None and current.listener.listen_host == listen_host:
                await self._grants.put(session_id, listen_host, current.listener.port, policy)
                current.listener.proxy.policy = policy
                return current.listener
            if current is not None:  # the session's sandbox moved to another network
                await self._stop(session_id)
            try:
                listener = self._start(session_id, listen_host, self._settings.port, policy)
            except CannotListen:
                if current is not None:  # its grant names the old address, which nothing serves now
                    await self._grants.delete(session_id)
                raise
            try:
                await self._grants.put(session_id, listen_host, listener.port, policy)
            except BaseException:
                await self._stop(session_id)
                raise
            logger.info(
                "egress opened",
                extra={"fields": {"session_id": session_id, "proxy_url": listener.url, **_describe(policy)}},
            )
            return listener

    async def close(self, session_id: str) -> bool:
        """Stop the session's proxy and forget its grant; ``False`` when it had neither."""
        async with self._lock:
            stopped = await self._stop(session_id)
            forgotten = await self._grants.delete(session_id)
        if stopped or forgotten:
            logger.info("egress closed", extra={"fields": {"session_id": session_id}})
        return stopped or forgotten

    async def restore(self) -> int:
        """Listen again for every grant on the bus; the number restored.

        A grant whose address this host no longer has (the session's network is gone) is dropped; one
        whose port is taken (another process holds it) is kept for a later start.
        """
        restored = 0
        async with self._lock:
            for session_id in await self._grants.sessions():
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
                try:
                    self._start(session_id, grant.listen_host, grant.port, grant.policy)
                except CannotListen as exc:
                    fields = {"session_id": session_id, "reason": str(exc)}
                    if exc.gone:
                        logger.warning("egress grant dropped", extra={"fields": fields})
                        await self._grants.delete(session_id)
                    else:
                        logger.warning("egress grant kept but not served", extra={"fields": fields})
                    continue
                restored += 1
        logger.info("egress grants restored", extra={"fields": {"restored": restored}})
        return restored

    def _start(self, session_id: str, listen_host: str, port: int, policy: EgressPolicy) -> Listener:
        if self._tasks is None:
            raise ShuttingDown("the credential-proxy is stopping; open the session's egress again shortly")
        proxy = SessionProxy(session_id, policy, self._settings, resolve=self._resolve, open_connection=self._open)
        listener = Listener.bind(proxy, listen_host, port)
        task = self._tasks.create_task(listener.serve(), name=f"egress-{session_id}")
        self._sessions[session_id] = _Running(listener, task)
        return listener

    async def _stop(self, session_id: str) -> bool:
        running = self._sessions.pop(session_id, None)
        if running is None:
            return False
        running.task.cancel()
        await _stopped(running)
        return True


async def _stopped(running: _Running) -> None:
    """Wait for a cancelled proxy task to finish, without taking its cancellation as ours."""
    await asyncio.wait([running.task])
    running.listener.close()  # a task cancelled before it ever ran never closed it


def _describe(policy: EgressPolicy) -> dict[str, object]:
    hosts = "any public host" if policy.allowed_hosts is None else len(policy.allowed_hosts)
    return {"allowed_hosts": hosts, "allow_package_managers": policy.allow_package_managers}
