"""One session's egress proxy: its unix socket, ``<socket_dir>/<session_id>/proxy.sock``, and its connections.

Each client connection carries one request. ``CONNECT host:port`` is checked and, when allowed,
answered ``200 Connection established`` and spliced to the destination until both sides finish or
it idles out. A request with an absolute ``http://`` URI is checked the same way, forwarded in origin
form with ``Connection: close`` and exactly its body, and the response streams back until the
destination closes. The proxy answers itself with one line of plain text: 400 (malformed request),
403 (refused by the policy or the address rules: the line names the host and what to do), 408 (no
request head in time), 431 (head too large), 502 (the destination cannot be resolved or reached) and
503 (the session already has ``max_connections`` connections).

Refusals are logged at INFO with the session id, host and reason; headers and bodies never are.
``SessionProxy`` carries the connections (and holds the policy); ``Listener`` is the socket and its
accept loop, which owns the connections in a task group: cancelling ``serve`` closes them all.

The socket is the session's identity: every connection accepted on it is that session's, whatever
it sends. Its directory (0755) holds nothing else, and the sandbox-manager mounts the directory,
not the socket, into the sandbox: a restarted credential-proxy binds a new socket in the same
directory and running sandboxes reach it. The socket is 0666 because the sandbox's user (uid 1000)
is not this process's; only the sandboxes it is mounted into can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final

from corral.contracts.egress import EGRESS_SOCKET_NAME, EgressPolicy
from corral.credential_proxy.destinations import (
    Open,
    OwnAddresses,
    Refused,
    Resolve,
    Unreachable,
    connect,
    vet,
)
from corral.credential_proxy.gitproxy import GitProxy, is_git_request
from corral.credential_proxy.hosts import HostRules, describe
from corral.credential_proxy.http_head import (
    CONNECTION_ESTABLISHED,
    BadRequest,
    Destination,
    Forward,
    answer,
    connect_destination,
    forward_request,
    parse_head,
)
from corral.credential_proxy.settings import EgressSettings
from corral.credential_proxy.splice import CHUNK, Activity, Idle, copy_body, pump, splice

logger = logging.getLogger(__name__)

#: After answering with an error, how long (and how many bytes) of what the client still sends is
#: read and dropped, so that closing does not reset the connection before the answer is read.
_LINGER_S: Final = 2.0
_LINGER_BYTES: Final = 1 << 20
#: Pause after a failed accept (out of file descriptors) before accepting again.
_ACCEPT_BACKOFF_S: Final = 0.2
#: Longest path a unix socket is bound to (``sun_path`` is 108 bytes on Linux, with a final NUL).
MAX_SOCKET_PATH: Final = 107
_DIRECTORY_MODE: Final = 0o755
#: Any uid may connect: the sandbox's user is not the credential-proxy's.
_SOCKET_MODE: Final = 0o666


class CannotListen(Exception):
    """The session's directory or socket cannot be made."""


class SessionProxy:
    """What one session's connections go through: its policy, and the connections it carries."""

    def __init__(
        self,
        session_id: str,
        policy: EgressPolicy,
        settings: EgressSettings,
        *,
        resolve: Resolve,
        open_connection: Open,
        own_addresses: OwnAddresses,
        git: GitProxy | None = None,
    ) -> None:
        self.session_id = session_id
        self._git = git
        self._settings = settings
        self._resolve = resolve
        self._open = open_connection
        self._own_addresses = own_addresses
        self._policy = policy
        self._rules = HostRules.from_policy(policy)
        self._active = 0
        self._rejecting = 0

    @property
    def policy(self) -> EgressPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: EgressPolicy) -> None:
        """Connections made from now on are checked against ``policy``; open ones carry on."""
        self._rules = HostRules.from_policy(policy)
        self._policy = policy

    @property
    def connections(self) -> int:
        return self._active

    def admit(self, conn: socket.socket) -> Coroutine[Any, Any, None] | None:
        """Count an accepted connection in at once, and give the coroutine that carries it (or answers
        503 when the session has ``max_connections`` already); ``None`` when it was simply closed."""
        limit = self._settings.max_connections
        if self._active < limit:
            self._active += 1
            return self._carry(conn)
        if self._rejecting < limit:
            self._rejecting += 1
            return self._reject(conn)
        conn.close()
        return None

    async def _reject(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
            logger.info(
                "egress refused",
                extra={"fields": {"session_id": self.session_id, "reason": "too many connections"}},
            )
            try:
                text = (
                    f"this sandbox already has {self._settings.max_connections} connections open through "
                    "its egress proxy; close some and retry"
                )
                await _answer(reader, writer, 503, text)
            finally:
                writer.close()
        except OSError:
            pass
        finally:
            self._rejecting -= 1

    async def _carry(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=self._settings.max_head_bytes)
            try:
                await self._handle(reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except Exception:
            logger.exception("egress connection failed", extra={"fields": {"session_id": self.session_id}})
        finally:
            self._active -= 1

    # --- one connection ---------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        settings = self._settings
        try:
            async with asyncio.timeout(settings.head_timeout_s):
                data = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return  # closed before sending a whole request head
        except asyncio.LimitOverrunError:
            await _answer(reader, writer, 431, f"the request head is larger than {settings.max_head_bytes} bytes")
            return
        except TimeoutError:
            await _answer(reader, writer, 408, f"no complete request head within {settings.head_timeout_s:g} s")
            return
        forward: Forward | None = None
        try:
            head = parse_head(data)
            if self._git is not None and head.method != "CONNECT" and is_git_request(head):
                # a session repository (``gitproxy``): its own rules, not the egress policy's hosts
                await self._git.carry(self.session_id, self._policy, head, reader, writer)
                return
            if head.method == "CONNECT":
                destination = connect_destination(head)
            else:
                forward = forward_request(head)
                destination = forward.destination
        except BadRequest as exc:
            self._log("egress request malformed", None, str(exc))
            await _answer(reader, writer, 400, str(exc))
            return
        try:
            vetted = await vet(
                destination,
                self._rules,
                ports=settings.ports,
                resolve=self._resolve,
                timeout_s=settings.connect_timeout_s,
                own_addresses=self._own_addresses,
                allow_addresses=settings.allow_addresses,
            )
            up_reader, up_writer, address = await connect(
                vetted, open_connection=self._open, timeout_s=settings.connect_timeout_s
            )
        except Refused as exc:
            self._log("egress refused", destination, str(exc))
            await _answer(reader, writer, 403, str(exc))
            return
        except Unreachable as exc:
            self._log("egress destination unreachable", destination, str(exc))
            await _answer(reader, writer, 502, str(exc))
            return
        logger.debug(
            "egress connected",
            extra={
                "fields": {"session_id": self.session_id, "host": describe(destination.host), "address": str(address)}
            },
        )
        activity = Activity(settings.idle_timeout_s)
        try:
            if forward is None:
                writer.write(CONNECTION_ESTABLISHED)
                await splice((reader, writer), (up_reader, up_writer), activity)
            else:
                up_writer.write(forward.head)
                async with asyncio.TaskGroup() as both:
                    body = both.create_task(copy_body(forward.body, reader, up_writer, activity))
                    await pump(up_reader, writer, activity)
                    body.cancel()  # the response is complete; whatever the client still sends is dropped
        except* Idle:
            logger.debug("egress connection idle", extra={"fields": {"session_id": self.session_id}})
        except* (OSError, EOFError, asyncio.LimitOverrunError, BadRequest):
            pass  # either side went away or broke the framing mid-stream: there is no one to answer
        finally:
            up_writer.close()

    def _log(self, message: str, destination: Destination | None, reason: str) -> None:
        fields: dict[str, object] = {"session_id": self.session_id, "reason": reason}
        if destination is not None:
            fields["host"] = describe(destination.host)
            fields["port"] = destination.port
        logger.info(message, extra={"fields": fields})


class Listener:
    """A session's unix socket, ``<directory>/proxy.sock``. Build it with ``bind``; run ``serve`` in a
    task; cancel it to stop (the socket file goes, the directory stays for the next start); ``remove``
    when the session is closed also deletes the directory."""

    def __init__(self, proxy: SessionProxy, sock: socket.socket, directory: Path) -> None:
        self.proxy = proxy
        self.directory = directory
        self.path = directory / EGRESS_SOCKET_NAME
        self._sock = sock
        self._inode = _inode(os.lstat(self.path))

    @classmethod
    def bind(cls, proxy: SessionProxy, directory: Path) -> Listener:
        """Listen on ``<directory>/proxy.sock``: the directory is made (0755) if missing, a socket file
        left there by an earlier run is replaced, and the new socket is made connectable by any uid.

        Raises:
            CannotListen: the path is too long for a unix socket, or the directory or socket cannot be made.
        """
        path = directory / EGRESS_SOCKET_NAME
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise CannotListen(
                f"cannot listen on {path}: a unix socket's path is at most {MAX_SOCKET_PATH} bytes; "
                "set CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR to a shorter directory"
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound = False
        try:
            _make_directory(directory)
            _remove_stale(path)
            sock.bind(os.fspath(path))
            bound = True
            os.chmod(path, _SOCKET_MODE)
            sock.listen(128)
            sock.setblocking(False)
            return cls(proxy, sock, directory)
        except OSError as exc:
            sock.close()
            if bound:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise CannotListen(f"cannot listen on {path}: {exc.strerror or exc}") from None

    def in_place(self) -> bool:
        """Whether the socket file is still this listener's (nothing removed or replaced it)."""
        try:
            return _inode(os.lstat(self.path)) == self._inode
        except OSError:
            return False

    def close(self) -> None:
        """Stop listening and remove the socket file (if it is still this listener's)."""
        self._sock.close()
        try:
            if _inode(os.lstat(self.path)) == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning(
                "egress socket not removed",
                extra={"fields": {"session_id": self.proxy.session_id, "error": str(exc)}},
            )

    def remove(self) -> None:
        """Close, and delete the session's directory."""
        self.close()
        remove_directory(self.directory, session_id=self.proxy.session_id)

    async def serve(self) -> None:
        """Accept and carry connections until cancelled; then every connection is closed."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as connections:
                while True:
                    try:
                        conn, _ = await loop.sock_accept(self._sock)
                    except OSError as exc:
                        logger.warning(
                            "egress accept failed",
                            extra={"fields": {"session_id": self.proxy.session_id, "error": str(exc)}},
                        )
                        await asyncio.sleep(_ACCEPT_BACKOFF_S)
                        continue
                    carry = self.proxy.admit(conn)
                    if carry is not None:
                        connections.create_task(carry)
        finally:
            self.close()


def remove_directory(directory: Path, *, session_id: str) -> None:
    """Delete a session's directory and the socket file in it, if they exist (nothing else is removed)."""
    try:
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISDIR(os.lstat(directory / EGRESS_SOCKET_NAME).st_mode):
                os.unlink(directory / EGRESS_SOCKET_NAME)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(directory)
    except OSError as exc:
        logger.warning(
            "egress directory not removed",
            extra={"fields": {"session_id": session_id, "directory": str(directory), "error": str(exc)}},
        )


def _make_directory(directory: Path) -> None:
    """The session's directory, 0755 whatever the umask; an existing one must be a directory (no link)."""
    try:
        os.mkdir(directory, _DIRECTORY_MODE)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, f"{directory} exists and is not a directory") from None
    os.chmod(directory, _DIRECTORY_MODE)


def _remove_stale(path: Path) -> None:
    """Unlink what an earlier run left at the socket's path (its socket, when it was not stopped cleanly)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, f"{path} is a directory")
    os.unlink(path)


def _inode(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, text: str) -> None:
    """Send the proxy's own answer, then drop what the client still sends for a moment before closing."""
    writer.write(answer(status, text))
    with contextlib.suppress(OSError, TimeoutError, EOFError, asyncio.LimitOverrunError):
        async with asyncio.timeout(_LINGER_S):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            dropped = 0
            while dropped < _LINGER_BYTES and (data := await reader.read(CHUNK)):
                dropped += len(data)
