"""An intercepted ``CONNECT``: TLS on both sides, HTTP/1.1 in between, placeholders substituted.

Used only for a host one of the session's ``environment_variable`` credentials is bound to (every
other ``CONNECT`` is a blind tunnel). The order is: TLS to the real server first, verified against
the system's CAs (plus ``CORRAL_CREDENTIAL_PROXY_EGRESS_UPSTREAM_CA_FILE``) for the host the sandbox
named (``UpstreamRefused`` before the sandbox is told anything, so it gets a 502); then ``200``; then
TLS with the sandbox, presenting a certificate for the host signed by the session's CA; then
requests are relayed one after the other on the connection.

HTTP/1.1 is parsed and framed by ``h11`` (a small, well-kept, sans-I/O HTTP/1.1 implementation that
already does the framing rules, keep-alive, ``Expect: 100-continue`` and upgrades right); both TLS
sides offer only ``http/1.1`` by ALPN. Each request's header values are substituted
(``injection``); when a bound credential may go in bodies, a body of at most ``max_body_bytes`` is
read whole, substituted and sent with its new ``Content-Length`` (an ``Expect: 100-continue`` is
answered here), a larger one is sent as it is. Responses are streamed back unchanged. An upgrade
(``101``) turns the connection into a plain two-way copy. Nothing here logs a header or a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import h11

from corral.credential_proxy.injection import Injection, injects_body, substitute_body, substitute_headers
from corral.credential_proxy.splice import CHUNK, Activity, splice

_HANDSHAKE_TIMEOUT_S: Final = 15.0
#: Request headers h11 frames the message by: replaced when a substituted body changes length.
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding", b"expect"})


class UpstreamRefused(Exception):
    """The real server's TLS could not be set up or verified; the message says why (for a 502)."""


def upstream_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verifying client TLS context: the system's CAs, and ``ca_file``'s when given.

    Raises:
        OSError, ssl.SSLError: ``ca_file`` cannot be read or holds no certificate.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    context.set_alpn_protocols(["http/1.1"])
    return context


async def secure_upstream(writer: asyncio.StreamWriter, context: ssl.SSLContext, host: str) -> None:
    """Upgrade the upstream connection to TLS, verifying the server's certificate for ``host``.

    Raises:
        UpstreamRefused: the handshake or the verification failed.
    """
    try:
        await writer.start_tls(context, server_hostname=host, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT_S)
    except ssl.SSLCertVerificationError as exc:
        raise UpstreamRefused(
            f"{host}'s TLS certificate could not be verified ({exc.verify_message}); the proxy only sends "
            "credentials to a server it can verify"
        ) from None
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        raise UpstreamRefused(f"TLS with {host} failed: {exc}") from None


async def secure_client(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext
) -> asyncio.StreamWriter:
    """Answer the sandbox's TLS as the server; the writer to use from now on (``reader`` reads the
    decrypted bytes). ``asyncio.StreamWriter.start_tls`` would act as a client here (the stream was
    opened on an accepted socket, not by a server callback), so the loop's ``start_tls`` is used.

    Raises:
        ssl.SSLError, OSError, TimeoutError: the sandbox did not complete the handshake (it may not
        trust the session's CA: a tool that ignores ``SSL_CERT_FILE``).
    """
    loop = asyncio.get_running_loop()
    await writer.drain()
    transport = writer.transport
    protocol = transport.get_protocol()
    secured = await loop.start_tls(
        transport, protocol, context, server_side=True, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT_S
    )
    if secured is None:
        raise OSError("the sandbox closed the connection during the TLS handshake")
    assert isinstance(protocol, asyncio.StreamReaderProtocol)
    return asyncio.StreamWriter(secured, protocol, reader, loop)


class Relay:
    """HTTP/1.1 between the sandbox (``client``) and the server (``upstream``), substituting."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        injections: Sequence[Injection],
        activity: Activity,
        *,
        max_body_bytes: int,
    ) -> None:
        self._client = client
        self._upstream = upstream
        self._injections = list(injections)
        self._activity = activity
        self._max_body = max_body_bytes
        self._server = h11.Connection(h11.SERVER)  # the side facing the sandbox
        self._origin = h11.Connection(h11.CLIENT)  # the side facing the real server

    async def run(self) -> None:
        """Relay requests until either side closes or breaks the protocol.

        Raises:
            Idle: nothing moved for the idle timeout.
            OSError, EOFError, h11.ProtocolError: a side went away or broke HTTP/1.1.
        """
        while True:
            request = await self._next(self._server, self._client[0])
            if isinstance(request, h11.ConnectionClosed):
                return
            if not isinstance(request, h11.Request):
                raise h11.RemoteProtocolError("expected a request")
            upgraded = await self._exchange(request)
            if upgraded:
                await self._tunnel()
                return
            states = (
                self._server.our_state,
                self._server.their_state,
                self._origin.our_state,
                self._origin.their_state,
            )
            if any(state is not h11.DONE for state in states):
                return  # one side must close (or an early answer left a body unread): so does the relay
            self._server.start_next_cycle()
            self._origin.start_next_cycle()

    async def _exchange(self, request: h11.Request) -> bool:
        headers = substitute_headers(request.headers.raw_items(), self._injections)
        buffered: bytes | None = None
        oversized = b""
        if injects_body(self._injections):
            try:
                buffered = await self._read_body()
            except _TooLarge as exc:  # sent as it is: what was read, then the rest as it comes
                oversized = exc.head
        if buffered is not None:
            headers = [(n, v) for n, v in headers if n.lower() not in _FRAMING]
            body = substitute_body(buffered, self._injections)
            headers.append((b"Content-Length", str(len(body)).encode()))
            await self._send_up(h11.Request(method=request.method, target=request.target, headers=headers))
            if body:
                await self._send_up(h11.Data(data=body))
            await self._send_up(h11.EndOfMessage())
            return await self._response()
        await self._send_up(h11.Request(method=request.method, target=request.target, headers=headers))
        if oversized:
            await self._send_up(h11.Data(data=oversized))
        async with asyncio.TaskGroup() as both:
            sending = both.create_task(self._stream_body())
            upgraded = await self._response()
            if self._server.their_state is not h11.DONE:
                sending.cancel()  # answered before the body ended: the rest is not sent
        return upgraded

    async def _read_body(self) -> bytes:
        """The whole request body (an ``Expect: 100-continue`` is answered first).

        Raises:
            _TooLarge: it is longer than ``max_body`` (carrying what was read).
        """
        if self._server.they_are_waiting_for_100_continue:
            await self._send_client(h11.InformationalResponse(status_code=100, headers=[]))
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._next(self._server, self._client[0])
            if isinstance(event, h11.Data):
                parts.append(bytes(event.data))
                size += len(event.data)
                if size > self._max_body:
                    raise _TooLarge(b"".join(parts))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:
                raise EOFError("the sandbox closed the connection in the middle of a request body")

    async def _stream_body(self) -> None:
        while True:
            event = await self._next(self._server, self._client[0])
            if isinstance(event, h11.Data):
                await self._send_up(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await self._send_up(h11.EndOfMessage(headers=event.headers))
                return
            else:
                raise EOFError("the sandbox closed the connection in the middle of a request body")

    async def _response(self) -> bool:
        """Stream the response back; ``True`` when it switched protocols (101)."""
        while True:
            event = await self._next(self._origin, self._upstream[0])
            if isinstance(event, h11.InformationalResponse):
                await self._send_client(
                    h11.InformationalResponse(
                        status_code=event.status_code, headers=event.headers.raw_items(), reason=event.reason
                    )
                )
                if event.status_code == 101:
                    return True
            elif isinstance(event, h11.Response):
                await self._send_client(
                    h11.Response(status_code=event.status_code, headers=event.headers.raw_items(), reason=event.reason)
                )
            elif isinstance(event, h11.Data):
                await self._send_client(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await self._send_client(h11.EndOfMessage(headers=event.headers.raw_items()))
                return False
            else:
                raise EOFError("the server closed the connection before its response ended")

    async def _tunnel(self) -> None:
        """After a 101: what each side sent past the handshake, then a plain copy both ways."""
        client_rest, _ = self._server.trailing_data
        origin_rest, _ = self._origin.trailing_data
        if client_rest:
            self._upstream[1].write(bytes(client_rest))
        if origin_rest:
            self._client[1].write(bytes(origin_rest))
        await splice(self._client, self._upstream, self._activity)

    async def _next(self, connection: h11.Connection, reader: asyncio.StreamReader) -> object:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await self._activity.within(functools.partial(reader.read, CHUNK))
                connection.receive_data(data)
                continue
            if event is h11.PAUSED:
                return h11.ConnectionClosed()
            return event

    async def _send_up(self, event: h11.Event) -> None:
        data = self._origin.send(event)
        if data:
            self._upstream[1].write(data)
            await self._activity.within(self._upstream[1].drain)

    async def _send_client(self, event: h11.Event) -> None:
        data = self._server.send(event)
        if data:
            self._client[1].write(data)
            await self._activity.within(self._client[1].drain)


class _TooLarge(Exception):
    def __init__(self, head: bytes) -> None:
        super().__init__("body larger than the substitution limit")
        self.head = head


async def relay(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    injections: Sequence[Injection],
    activity: Activity,
    *,
    max_body_bytes: int,
) -> None:
    """Relay HTTP/1.1 with ``injections`` until either side is done (see ``Relay.run``)."""
    await Relay(client, upstream, injections, activity, max_body_bytes=max_body_bytes).run()


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        async with asyncio.timeout(2):
            await writer.wait_closed()
