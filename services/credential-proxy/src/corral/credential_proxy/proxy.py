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
``SessionProxy`` carries the connections (and holds the policy); ``corral.credential_proxy.listener``
is the socket and its accept loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import socket
import ssl
from collections.abc import Coroutine
from typing import Any, Final

import h11

from corral.contracts.api.errors import ApiError
from corral.contracts.egress import EgressPolicy
from corral.credential_proxy import metrics
from corral.credential_proxy.destinations import (
    Open,
    OwnAddresses,
    Refused,
    Resolve,
    Unreachable,
    connect,
    vet,
)
from corral.credential_proxy.egress_credentials import EgressCredentials, has_credentials
from corral.credential_proxy.gitproxy import GitProxy, is_git_request
from corral.credential_proxy.hosts import HostRules, describe
from corral.credential_proxy.http_head import (
    CONNECTION_ESTABLISHED,
    BadRequest,
    Body,
    Destination,
    Forward,
    RequestHead,
    answer,
    connect_destination,
    forward_request,
    parse_head,
)
from corral.credential_proxy.injection import Injection, injects_body, substitute_body, substitute_header_value
from corral.credential_proxy.interception import (
    UpstreamRefused,
    close_quietly,
    relay,
    secure_client,
    secure_upstream,
    upstream_context,
)
from corral.credential_proxy.secret_store import SecretStoreUnavailable
from corral.credential_proxy.settings import EgressSettings
from corral.credential_proxy.splice import CHUNK, Activity, Idle, copy_body, pump, splice

logger = logging.getLogger(__name__)

#: After answering with an error, how long (and how many bytes) of what the client still sends is
#: read and dropped, so that closing does not reset the connection before the answer is read.
_LINGER_S: Final = 2.0
_LINGER_BYTES: Final = 1 << 20


class CredentialsUnreadable(Exception):
    """The session's credentials cannot be read now; the message says so (for a 502)."""


def _host_name(destination: Destination) -> str:
    """The destination's host as a certificate and ``server_hostname`` name it (an IP address bare)."""
    return str(destination.host)


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
        credentials: EgressCredentials | None = None,
        upstream_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.session_id = session_id
        self._git = git
        self._credentials = credentials
        self._upstream_tls = upstream_tls
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
            metrics.EGRESS_CONNECTIONS.labels(outcome="too_many").inc()
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
                metrics.EGRESS_CONNECTIONS.labels(outcome="git").inc()
                await self._git.carry(self.session_id, self._policy, head, reader, writer)
                return
            if head.method == "CONNECT":
                destination = connect_destination(head)
            else:
                forward = forward_request(head)
                destination = forward.destination
        except BadRequest as exc:
            metrics.EGRESS_CONNECTIONS.labels(outcome="malformed").inc()
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
            metrics.EGRESS_CONNECTIONS.labels(outcome="refused").inc()
            self._log("egress refused", destination, str(exc))
            await self._note_unreachable(destination, str(exc))
            await _answer(reader, writer, 403, str(exc))
            return
        except Unreachable as exc:
            metrics.EGRESS_CONNECTIONS.labels(outcome="unreachable").inc()
            self._log("egress destination unreachable", destination, str(exc))
            await self._note_unreachable(destination, str(exc))
            await _answer(reader, writer, 502, str(exc))
            return
        try:
            injections = await self._injections(destination)
        except CredentialsUnreadable as exc:
            up_writer.close()
            metrics.EGRESS_CONNECTIONS.labels(outcome="credentials_unreadable").inc()
            self._log("egress credentials unreadable", destination, str(exc))
            await _answer(reader, writer, 502, str(exc))
            return
        metrics.EGRESS_CONNECTIONS.labels(outcome="connected").inc()
        logger.debug(
            "egress connected",
            extra={
                "fields": {"session_id": self.session_id, "host": describe(destination.host), "address": str(address)}
            },
        )
        activity = Activity(settings.idle_timeout_s)
        try:
            if forward is None and injections:
                await self._intercept((reader, writer), (up_reader, up_writer), destination, injections, activity)
            elif forward is None:
                writer.write(CONNECTION_ESTABLISHED)
                await splice((reader, writer), (up_reader, up_writer), activity)
            else:
                if injections:
                    forward, read = await self._substituted(head, forward, reader, injections, activity)
                    up_writer.write(forward.head + read)
                else:
                    up_writer.write(forward.head)
                async with asyncio.TaskGroup() as both:
                    body = both.create_task(copy_body(forward.body, reader, up_writer, activity))
                    await pump(up_reader, writer, activity)
                    body.cancel()  # the response is complete; whatever the client still sends is dropped
        except* Idle:
            logger.debug("egress connection idle", extra={"fields": {"session_id": self.session_id}})
        except* (OSError, EOFError, asyncio.LimitOverrunError, BadRequest, h11.ProtocolError):
            pass  # either side went away or broke the framing mid-stream: there is no one to answer
        finally:
            up_writer.close()

    # --- credentials at egress ------------------------------------------------------------------------
    async def _injections(self, destination: Destination) -> list[Injection]:
        """The session's credentials bound to the destination's host (none without credentials).

        Raises:
            CredentialsUnreadable: the session's vaults or secrets cannot be read now.
        """
        if self._credentials is None or not has_credentials(self._policy):
            return []
        try:
            return await self._credentials.injections(self.session_id, self._policy, _host_name(destination))
        except SecretStoreUnavailable:
            raise CredentialsUnreadable(
                "the session's credentials cannot be read right now (the secret store is unavailable); retry shortly"
            ) from None
        except ApiError as exc:
            raise CredentialsUnreadable(
                f"the session's vaults cannot be read right now ({exc.message}); retry"
            ) from None

    async def _note_unreachable(self, destination: Destination, reason: str) -> None:
        """Note the credentials bound to a destination the sandbox could not reach, for the harness to
        log (before the sandbox is answered, so the note is there when its tool call ends)."""
        if self._credentials is None or not has_credentials(self._policy):
            return
        try:
            await self._credentials.note_unreachable(
                self.session_id, self._policy, _host_name(destination), destination.port, reason
            )
        except (SecretStoreUnavailable, ApiError) as exc:
            reason = exc.message if isinstance(exc, ApiError) else str(exc)
            self._log("egress failure not noted: credentials unreadable", destination, reason)

    async def _intercept(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        destination: Destination,
        injections: list[Injection],
        activity: Activity,
    ) -> None:
        """TLS to the server (verified), ``200``, TLS with the sandbox as the host, then the relay."""
        assert self._credentials is not None
        host = _host_name(destination)
        context = self._upstream_tls or upstream_context(None)
        try:
            await secure_upstream(upstream[1], context, host)
        except UpstreamRefused as exc:
            self._log("egress destination refused for credentials", destination, str(exc))
            await self._note_unreachable(destination, str(exc))
            await _answer(client[0], client[1], 502, str(exc))
            return
        client[1].write(CONNECTION_ESTABLISHED)
        authority = self._credentials.authority(self.session_id)
        secured = await secure_client(client[0], client[1], authority.server_context(host))
        logger.info(
            "egress intercepted for credentials",
            extra={
                "fields": {
                    "session_id": self.session_id,
                    "host": describe(destination.host),
                    "credential_ids": [i.credential_id for i in injections],
                }
            },
        )
        try:
            await relay(
                (client[0], secured),
                upstream,
                injections,
                activity,
                max_body_bytes=self._settings.max_injected_body_bytes,
            )
        finally:
            await close_quietly(secured)

    async def _substituted(
        self,
        head: RequestHead,
        forward: Forward,
        reader: asyncio.StreamReader,
        injections: list[Injection],
        activity: Activity,
    ) -> tuple[Forward, bytes]:
        """A plain-HTTP request to a bound host, substituted: its new head, and its body when that was
        read here (a ``Content-Length`` body of at most ``max_injected_body_bytes`` with a credential
        allowed in bodies), else ``b""`` and the body is copied as it comes."""
        headers = [
            (name, substitute_header_value(value.encode("latin-1"), injections).decode("latin-1"))
            for name, value in head.headers
        ]
        body = b""
        limit = self._settings.max_injected_body_bytes
        read_body = injects_body(injections) and forward.body.kind == "length" and forward.body.length <= limit
        if read_body:
            raw = await activity.within(functools.partial(reader.readexactly, forward.body.length))
            body = substitute_body(raw, injections)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        substituted = forward_request(dataclasses.replace(head, headers=tuple(headers)))
        if read_body:
            substituted = dataclasses.replace(substituted, body=Body("none"))
        return substituted, body

    def _log(self, message: str, destination: Destination | None, reason: str) -> None:
        fields: dict[str, object] = {"session_id": self.session_id, "reason": reason}
        if destination is not None:
            fields["host"] = describe(destination.host)
            fields["port"] = destination.port
        logger.info(message, extra={"fields": fields})


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
