"""``web_fetch``: one ``GET`` under the same destination rules as a sandbox's egress.

For each hop (the URL, then each redirect's ``Location``, at most ``web_fetch_max_redirects``):

1. the URL is ``http`` or ``https``, with a host and no user name (else ``invalid_tool_input``);
2. the tool's ``allowed_domains`` / ``blocked_domains`` allow its host (``url_not_allowed``);
3. ``destinations.vet`` with every host allowed by name: the port is one of ``CORRAL_CREDENTIAL_PROXY_EGRESS_PORTS``,
   the name resolves once and every address passes the address rules (no loopback, private,
   link-local, documentation or own address unless ``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES`` holds it)
   (``url_not_allowed``; a name that does not resolve is ``url_not_accessible``);
4. the connection goes to those vetted addresses only (``PinnedBackend``), never to the name again,
   so DNS cannot answer differently between the check and the connection; TLS still verifies the
   name.

The whole fetch is bounded by ``web_fetch_timeout_s`` and the body by ``web_fetch_max_bytes`` (the
rest is dropped, with a note). The environment's ``networking`` does not apply: the API restricts web
tools per tool, never by the environment.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import zlib
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin, urlsplit

import httpcore2
from opentelemetry import trace

from corral import telemetry
from corral.contracts.api.errors import ApiError, invalid
from corral.contracts.web import MAX_URL_LENGTH, FetchedPage, FetchPage, WebError
from corral.credential_proxy import metrics
from corral.credential_proxy.destinations import (
    OwnAddresses,
    Refused,
    Resolve,
    Unreachable,
    Vetted,
    system_resolve,
    vet,
)
from corral.credential_proxy.hosts import BadHost, HostRules, IPAddress, parse_host
from corral.credential_proxy.http_head import Destination
from corral.credential_proxy.pagetext import (
    HTML_TYPES,
    PDF_TYPE,
    decode,
    html_to_text,
    is_text,
    media_type_of,
    truncate_to_tokens,
)
from corral.credential_proxy.pinned import PinnedBackend
from corral.credential_proxy.settings import EgressSettings, WebSettings
from corral.credential_proxy.webdomains import domain_problem

logger = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)

REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_ANY_HOST: Final = HostRules(any_host=True)
_HEADERS: Final = [
    (b"User-Agent", b"Corral-web_fetch/1.0"),
    (b"Accept", b"text/html,application/xhtml+xml,text/plain;q=0.9,application/pdf;q=0.8,*/*;q=0.5"),
    (b"Accept-Encoding", b"identity"),
]


def _get_attributes(target: Target) -> dict[str, str | int]:
    """A web_fetch request's client span: where it went, never the URL's path or query."""
    return {
        "http.request.method": "GET",
        "server.address": str(target.host),
        "server.port": target.port,
        "corral.web.tool": "web_fetch",
    }


def web_error(code: str, message: str) -> ApiError:
    return invalid(message, error_code=code)


@dataclass(frozen=True)
class Target:
    url: str
    host: str | IPAddress
    port: int
    path: str


def parse_target(url: str) -> Target:
    """Raises: ApiError: the URL is too long, not http(s), has no host or names a user."""
    if len(url) > MAX_URL_LENGTH:
        raise web_error(
            WebError.URL_TOO_LONG, f"the URL is {len(url)} characters; web_fetch takes at most {MAX_URL_LENGTH}"
        )
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise web_error(WebError.INVALID_INPUT, f"{url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise web_error(WebError.INVALID_INPUT, f"{url!r} is not an http or https URL; web_fetch fetches only those")
    if parts.username is not None or parts.password is not None:
        raise web_error(WebError.INVALID_INPUT, f"{url!r} names a user; give the URL without credentials")
    if not parts.hostname:
        raise web_error(WebError.INVALID_INPUT, f"{url!r} has no host")
    try:
        host = parse_host(parts.hostname)
    except BadHost as exc:
        raise web_error(WebError.INVALID_INPUT, str(exc)) from None
    return Target(
        url=parts.geturl(),
        host=host,
        port=port if port is not None else (443 if parts.scheme == "https" else 80),
        path=parts.path or "/",
    )


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    cut: bool


class WebFetcher:
    def __init__(
        self,
        settings: WebSettings,
        egress: EgressSettings,
        *,
        own_addresses: OwnAddresses,
        resolve: Resolve = system_resolve,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._egress = egress
        self._own = own_addresses
        self._resolve = resolve
        self._ssl = ssl_context or ssl.create_default_context()

    async def fetch(self, request: FetchPage) -> FetchedPage:
        """Raises: ApiError: with a ``WebError`` code and a message for the model."""
        timeout_s = self._settings.web_fetch_timeout_s
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    page = await self._fetch(request)
            except TimeoutError:
                raise web_error(
                    WebError.URL_NOT_ACCESSIBLE,
                    f"fetching {request.url} took longer than {timeout_s:g} s; try again later",
                ) from None
        except ApiError as exc:
            metrics.WEB_FETCHES.labels(outcome=exc.error_code or exc.error_type).inc()
            raise
        metrics.WEB_FETCHES.labels(outcome="ok").inc()
        return page

    async def _fetch(self, request: FetchPage) -> FetchedPage:
        url = request.url
        for _hop in range(self._settings.web_fetch_max_redirects + 1):
            target = parse_target(url)
            host = target.host if isinstance(target.host, str) else str(target.host)
            problem = domain_problem(host, target.path, request.allowed_domains, request.blocked_domains)
            if problem is not None:
                raise web_error(WebError.URL_NOT_ALLOWED, f"web_fetch of {url} refused: {problem}")
            vetted = await self._vet(url, target)
            with _tracer.start_as_current_span(
                "GET", kind=trace.SpanKind.CLIENT, attributes=_get_attributes(target)
            ) as span:
                answer = await self._get(target, vetted)
                span.set_attribute("http.response.status_code", answer.status)
            location = answer.headers.get("location")
            if answer.status in REDIRECTS and location:
                url = urljoin(target.url, location)
                logger.info("web_fetch redirected", extra={"fields": {"session_id": request.session_id, "to": url}})
                continue
            return self._page(request, target.url, answer)
        raise web_error(
            WebError.URL_NOT_ACCESSIBLE,
            f"{request.url} redirected more than {self._settings.web_fetch_max_redirects} times; fetch the final URL",
        )

    async def _vet(self, url: str, target: Target) -> Vetted:
        try:
            return await vet(
                Destination(host=target.host, port=target.port),
                _ANY_HOST,
                ports=self._egress.ports,
                resolve=self._resolve,
                timeout_s=self._egress.connect_timeout_s,
                own_addresses=self._own,
                allow_addresses=self._egress.allow_addresses,
            )
        except Refused as exc:
            raise web_error(WebError.URL_NOT_ALLOWED, f"web_fetch of {url} refused: {exc}") from None
        except Unreachable as exc:
            raise web_error(WebError.URL_NOT_ACCESSIBLE, f"web_fetch of {url} failed: {exc}") from None

    async def _get(self, target: Target, vetted: Vetted) -> Response:
        limit = self._settings.web_fetch_max_bytes
        backend = PinnedBackend(
            vetted.destination.host,
            vetted.destination.port,
            vetted.addresses,
            connect_timeout_s=self._egress.connect_timeout_s,
            what="web_fetch",
        )
        try:
            async with (
                httpcore2.AsyncConnectionPool(
                    ssl_context=self._ssl, max_connections=1, network_backend=backend
                ) as pool,
                pool.stream("GET", target.url, headers=_HEADERS) as response,
            ):
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
                body = bytearray()
                cut = False
                async for chunk in response.aiter_stream():
                    body += chunk
                    if len(body) > limit:
                        del body[limit:]
                        cut = True
                        break
                return Response(status=response.status, headers=headers, body=bytes(body), cut=cut)
        except (httpcore2.TimeoutException, httpcore2.NetworkError, httpcore2.ProtocolError, ssl.SSLError) as exc:
            raise web_error(
                WebError.URL_NOT_ACCESSIBLE, f"fetching {target.url} failed: {exc or type(exc).__name__}"
            ) from None

    def _page(self, request: FetchPage, url: str, answer: Response) -> FetchedPage:
        if answer.status >= 400:
            raise web_error(WebError.URL_NOT_ACCESSIBLE, f"{url} answered HTTP {answer.status}")
        media_type, charset = media_type_of(answer.headers.get("content-type"))
        body = _decoded(answer, self._settings.web_fetch_max_bytes)
        notes: list[str] = []
        if answer.cut:
            notes.append(
                f"Only the first {self._settings.web_fetch_max_bytes} bytes of the response were read "
                "(CORRAL_CREDENTIAL_PROXY_WEB_FETCH_MAX_BYTES)."
            )
        if media_type == PDF_TYPE:
            if answer.cut:
                raise web_error(
                    WebError.UNSUPPORTED_CONTENT_TYPE,
                    f"the PDF at {url} is larger than {self._settings.web_fetch_max_bytes} bytes, "
                    "the most web_fetch reads",
                )
            return FetchedPage(
                url=url, status=answer.status, content_type=media_type, pdf_base64=base64.b64encode(body).decode()
            )
        title: str | None = None
        if media_type in HTML_TYPES or (
            not media_type and body.lstrip()[:15].lower().startswith((b"<!doctype", b"<html"))
        ):
            page = html_to_text(body, url, charset)
            title, text = page.title, page.text
        elif is_text(media_type) or not media_type:
            text = decode(body, charset)
        else:
            raise web_error(
                WebError.UNSUPPORTED_CONTENT_TYPE,
                f"{url} is {media_type}; web_fetch returns HTML, text and PDF content only",
            )
        text, note = truncate_to_tokens(text, request.max_content_tokens)
        if note is not None:
            notes.append(note)
        return FetchedPage(
            url=url, status=answer.status, content_type=media_type or "text/plain", title=title, text=text, notes=notes
        )


def _decoded(answer: Response, limit: int) -> bytes:
    """The body without its ``Content-Encoding`` (gzip or deflate), at most ``limit`` bytes."""
    encoding = answer.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return answer.body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise web_error(
            WebError.UNSUPPORTED_CONTENT_TYPE, f"the response is {encoding}-encoded, which web_fetch cannot read"
        )
    try:
        return zlib.decompressobj(wbits=47).decompress(answer.body, limit)  # gzip or zlib, detected
    except zlib.error:
        try:
            return zlib.decompressobj(wbits=-15).decompress(answer.body, limit)  # raw deflate
        except zlib.error as exc:
            raise web_error(WebError.URL_NOT_ACCESSIBLE, f"the response's {encoding} body is corrupt ({exc})") from None
