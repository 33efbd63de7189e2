"""One ``POST`` to an OAuth token endpoint, under the destination rules (tenants choose the URL).

The endpoint's host is vetted as an MCP server's is (``rules_vet``: resolved once, every address
checked against the address rules, the destinations the operator admits with
``CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS`` excepted) and the connection goes to those vetted
addresses only, never to the name again; TLS verifies the certificate against the URL's name.
Redirects are not followed (RFC 6749 token requests are not redirected), the answer is read up to
``max_bytes`` and the whole exchange is bounded by ``timeout_s``. The form and headers carry secrets:
they are never logged, and no error raised here quotes them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpcore2

from corral.credential_proxy.hosts import BadHost, IPAddress, parse_host
from corral.credential_proxy.mcp_destinations import DestinationRefused, Rules
from corral.credential_proxy.pinned import PinnedBackend


class EndpointUnusable(Exception):
    """The endpoint URL is malformed, refused by the destination rules, unreachable or too slow."""


Vet = Callable[[str | IPAddress, int], Awaitable[tuple[IPAddress, ...]]]
"""The addresses to connect to for ``host:port``, each allowed; raises ``EndpointUnusable`` saying why."""


def rules_vet(rules: Rules) -> Vet:
    """The MCP client's destination rules (``mcp_destinations``): any port, every address must pass the
    address rules unless the operator admits ``host:port`` in ``CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS``."""

    async def vetted(host: str | IPAddress, port: int) -> tuple[IPAddress, ...]:
        try:
            return await rules.vet(host, port, what="token endpoint")
        except DestinationRefused as exc:
            raise EndpointUnusable(str(exc)) from None

    return vetted


@dataclass(frozen=True)
class TokenAnswer:
    status: int
    content_type: str
    body: bytes


@dataclass
class TokenEndpoint:
    vet: Vet
    timeout_s: float = 10.0
    max_bytes: int = 65536
    ssl_context: ssl.SSLContext | None = None

    async def post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> TokenAnswer:
        """``form`` as ``application/x-www-form-urlencoded`` to ``url``; the answer, whatever its status.

        Raises:
            EndpointUnusable: not an http(s) URL with a host, refused, unreachable, or no answer in time.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise EndpointUnusable(f"the token endpoint {url!r} is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
            raise EndpointUnusable(f"the token endpoint {url!r} must be an http(s) URL with a host and no user")
        try:
            host = parse_host(parts.hostname)
        except BadHost as exc:
            raise EndpointUnusable(f"the token endpoint {url!r} has a bad host: {exc}") from None
        port = port if port is not None else (443 if parts.scheme == "https" else 80)
        body = urlencode(form).encode()
        request_headers = [
            (b"Content-Type", b"application/x-www-form-urlencoded"),
            (b"Accept", b"application/json"),
            (b"User-Agent", b"Corral-credential-proxy/1.0"),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
        ]
        try:
            async with asyncio.timeout(self.timeout_s):
                addresses = await self.vet(host, port)
                backend = PinnedBackend(host, port, addresses, what="a token endpoint")
                async with (
                    httpcore2.AsyncConnectionPool(
                        ssl_context=self.ssl_context or ssl.create_default_context(),
                        max_connections=1,
                        network_backend=backend,
                    ) as pool,
                    pool.stream("POST", url, headers=request_headers, content=body) as response,
                ):
                    content_type = ""
                    for name, value in response.headers:
                        if name.lower() == b"content-type":
                            content_type = value.decode("latin-1")
                    read = bytearray()
                    async for chunk in response.aiter_stream():
                        read += chunk
                        if len(read) > self.max_bytes:
                            raise EndpointUnusable(
                                f"the token endpoint {url} answered more than {self.max_bytes} bytes"
                            )
                    return TokenAnswer(status=response.status, content_type=content_type, body=bytes(read))
        except TimeoutError:
            raise EndpointUnusable(f"the token endpoint {url} did not answer within {self.timeout_s:g} s") from None
        except (httpcore2.NetworkError, httpcore2.ProtocolError, httpcore2.TimeoutException, ssl.SSLError) as exc:
            raise EndpointUnusable(
                f"the token endpoint {url} could not be reached ({exc or type(exc).__name__})"
            ) from None
