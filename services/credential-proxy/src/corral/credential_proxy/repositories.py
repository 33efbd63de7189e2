"""Session repositories: their tokens in OpenBao, which hosts they may live on, and how to reach them.

A repository's token is kept in OpenBao (KV v2 mount ``corral``) at ``repositories/<resource_id>``
with the url it was given for: ``{"url": ..., "token": ...}`` (``token`` absent for a public
repository). It is written by ``register`` (the gateway's create and ``resources.update``, a
rotation), read for every git request the session's sandbox sends through its proxy (so a rotation
counts from the next request) and deleted by ``forget``. It is never logged, never put on a stream,
and only ever sent to the url it was registered with.

A repository's host must be one of ``CORRAL_CREDENTIAL_PROXY_GIT_HOSTS`` (``github.com`` by default;
``name:port`` for another port than the scheme's), and every address it resolves to must pass the
egress address rules (``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES`` admits private ones):
the proxy connects to the vetted addresses, never resolving the name twice.

``check`` asks the host for the repository's refs (``GET <url>/info/refs?service=git-upload-pack``)
with the token, so that a clone that cannot work is reported as the API's ``repository_*_error``
rather than as git's output.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from hvac.exceptions import InvalidPath, VaultError
from requests import RequestException

from corral.contracts.api.errors import ApiError, invalid
from corral.contracts.repositories import (
    CheckRepository,
    RegisterRepository,
    RepositoryCheckout,
    RepositoryProblem,
    url_problem,
)
from corral.credential_proxy.destinations import OwnAddresses, Refused, Resolve, Unreachable, connect, vet
from corral.credential_proxy.hosts import BadHost, HostRules, IPAddress, parse_host
from corral.credential_proxy.http_head import Destination
from corral.credential_proxy.settings import EgressSettings, GitSettings
from corral.credential_proxy.vault import Vault

logger = logging.getLogger(__name__)

KV_MOUNT: Final = "corral"
_PATH: Final = "repositories/{}"
#: Most bytes of a refs advertisement read by ``check`` (past it, the branch is not looked for).
_MAX_REFS_BYTES: Final = 16 << 20
_ANY_HOST: Final = HostRules(any_host=True)


class VaultUnavailable(Exception):
    """OpenBao could not be read or written; the message says what to do (never the token)."""


@dataclass(frozen=True)
class Stored:
    url: str
    token: str | None

    def __repr__(self) -> str:  # never the token
        return f"Stored(url={self.url!r}, token={'set' if self.token else 'none'})"


@dataclass(frozen=True)
class Upstream:
    """Where a repository lives: scheme, host, port and the path of the repository."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def authorization(token: str | None) -> list[tuple[str, str]]:
    """The header a git host takes a token in (GitHub's and git http-backend's Basic form)."""
    if not token:
        return []
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return [("Authorization", f"Basic {basic}")]


class Repositories:
    def __init__(
        self,
        vault: Vault,
        settings: GitSettings,
        egress: EgressSettings,
        *,
        resolve: Resolve,
        own_addresses: OwnAddresses,
    ) -> None:
        self._vault = vault
        self._settings = settings
        self._egress = egress
        self._resolve = resolve
        self._own = own_addresses
        self._tls = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)

    # --- where ---------------------------------------------------------------------------------------
    def upstream(self, url: str) -> Upstream:
        """The repository's host, checked against ``CORRAL_CREDENTIAL_PROXY_GIT_HOSTS``.

        Raises:
            ApiError: (invalid_request_error) a malformed url, or a host repositories may not live on.
        """
        problem = url_problem(url)
        if problem is not None:
            raise invalid(f"url: {problem}")
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().removesuffix(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        entry = host if parts.port is None or port == (443 if parts.scheme == "https" else 80) else f"{host}:{port}"
        if entry not in self._settings.hosts and f"{host}:{port}" not in self._settings.hosts:
            allowed = ", ".join(self._settings.hosts)
            raise invalid(
                f"url: repositories on {entry} are not reachable from this deployment (repository hosts: "
                f"{allowed}); an operator adds a host to the credential-proxy's CORRAL_CREDENTIAL_PROXY_GIT_HOSTS",
                error_code="repository_host_not_allowed",
            )
        return Upstream(scheme=parts.scheme, host=host, port=port, path=parts.path.rstrip("/"))

    async def open(self, upstream: Upstream) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the repository's host, on an address the egress rules allow (TLS for https).

        Raises:
            Refused: the host resolves to an address the rules refuse.
            Unreachable: it does not resolve or answer.
        """
        try:
            host: str | IPAddress = parse_host(upstream.host)
        except BadHost as exc:
            raise Refused(str(exc)) from None
        vetted = await vet(
            Destination(host=host, port=upstream.port),
            _ANY_HOST,
            ports=(upstream.port,),
            resolve=self._resolve,
            timeout_s=self._egress.connect_timeout_s,
            own_addresses=self._own,
            allow_addresses=(*self._egress.allow_addresses, *self._settings.allow_addresses),
        )
        tls = self._tls if upstream.scheme == "https" else None

        async def opener(address: IPAddress, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection(
                str(address), port, ssl=tls, server_hostname=upstream.host if tls else None
            )

        reader, writer, _address = await connect(
            vetted, open_connection=opener, timeout_s=self._egress.connect_timeout_s
        )
        return reader, writer

    # --- tokens --------------------------------------------------------------------------------------
    async def register(self, request: RegisterRepository) -> bool:
        """Keep the resource's token (or none) for its url; whether it has a token.

        Raises:
            ApiError: the url is malformed or its host not allowed.
            VaultUnavailable: OpenBao did not take it.
        """
        self.upstream(request.url)
        secret: dict[str, Any] = {"url": request.url}
        if request.authorization_token:
            secret["token"] = request.authorization_token
        path = _PATH.format(request.resource_id)
        await self._call(
            lambda: self._vault.client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=secret, mount_point=KV_MOUNT
            )
        )
        logger.info(
            "repository registered",
            extra={"fields": {"resource_id": request.resource_id, "token": bool(request.authorization_token)}},
        )
        return bool(request.authorization_token)

    async def stored(self, resource_id: str) -> Stored | None:
        """The resource's url and token; ``None`` when it was never registered (or forgotten).

        Raises:
            VaultUnavailable: OpenBao could not be read.
        """
        path = _PATH.format(resource_id)

        def read() -> dict[str, Any] | None:
            try:
                result: dict[str, Any] = self._vault.client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=KV_MOUNT, raise_on_deleted_version=True
                )
            except InvalidPath:
                return None
            return result

        result = await self._call(read)
        if result is None:
            return None
        data = result.get("data", {}).get("data", {})
        token = data.get("token")
        return Stored(url=str(data.get("url", "")), token=token if isinstance(token, str) and token else None)

    async def forget(self, resource_ids: list[str]) -> int:
        forgotten = 0
        for resource_id in resource_ids:
            path = _PATH.format(resource_id)

            def delete(path: str = path) -> bool:
                try:
                    self._vault.client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=KV_MOUNT)
                except InvalidPath:
                    return False
                return True

            if await self._call(delete):
                forgotten += 1
        logger.info("repositories forgotten", extra={"fields": {"forgotten": forgotten}})
        return forgotten

    async def _call(self, work: Any) -> Any:
        try:
            return await asyncio.to_thread(work)
        except (VaultError, RequestException, OSError) as exc:
            logger.warning("OpenBao refused a repository operation", extra={"fields": {"error": type(exc).__name__}})
            raise VaultUnavailable(
                f"the credential vault (OpenBao) is unavailable ({type(exc).__name__}); retry shortly"
            ) from None

    # --- checking ------------------------------------------------------------------------------------
    async def check(self, request: CheckRepository) -> RepositoryProblem | None:
        """Whether the repository can be cloned as asked, with its token; the problem when not."""
        try:
            upstream = self.upstream(request.url)
        except ApiError as exc:
            return RepositoryProblem(type="repository_clone_error", message=exc.message)
        try:
            stored = await self.stored(request.resource_id)
        except VaultUnavailable as exc:
            return RepositoryProblem(type="repository_clone_error", message=str(exc))
        if stored is None or stored.url != request.url:
            return RepositoryProblem(
                type="repository_authentication_error",
                message="no credentials are registered for this repository; update the resource's "
                "authorization_token (sessions.resources.update)",
            )
        try:
            status, body = await self._refs(upstream, stored.token)
        except (Refused, Unreachable) as exc:
            return RepositoryProblem(type="repository_clone_error", message=str(exc))
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            return RepositoryProblem(
                type="repository_clone_error",
                message=f"{upstream.authority} did not answer as a git server ({type(exc).__name__}); retry later",
            )
        return _judge(status, body, upstream, request.checkout, has_token=stored.token is not None)

    async def _refs(self, upstream: Upstream, token: str | None) -> tuple[int, bytes | None]:
        reader, writer = await self.open(upstream)
        try:
            lines = [
                f"GET {upstream.path}/info/refs?service=git-upload-pack HTTP/1.1",
                f"Host: {upstream.authority}",
                "User-Agent: git/2-corral",
                "Accept: */*",
                *(f"{k}: {v}" for k, v in authorization(token)),
                "Connection: close",
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            async with asyncio.timeout(self._settings.timeout_s):
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                status, headers = _response_head(head)
                if status != 200:
                    return status, None
                data = await reader.read(_MAX_REFS_BYTES + 1)
                while data and len(data) <= _MAX_REFS_BYTES:
                    more = await reader.read(_MAX_REFS_BYTES + 1 - len(data))
                    if not more:
                        break
                    data += more
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        if len(data) > _MAX_REFS_BYTES:
            return status, None
        if "chunked" in headers.get("transfer-encoding", ""):
            data = _dechunk(data)
        return status, data


def _response_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError("not an HTTP response")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip().lower()
    return int(parts[1]), headers


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


def _refs_in(body: bytes) -> set[str]:
    """The ref names of a (protocol v0) ``git-upload-pack`` advertisement."""
    refs: set[str] = set()
    offset = 0
    while offset + 4 <= len(body):
        try:
            length = int(body[offset : offset + 4], 16)
        except ValueError:
            break
        if length == 0:
            offset += 4
            continue
        line = body[offset + 4 : offset + length].split(b"\0")[0].rstrip(b"\n")
        offset += length
        sha, _, name = line.partition(b" ")
        if len(sha) == 40 and name:
            refs.add(name.decode("utf-8", "replace"))
    return refs


def _judge(
    status: int, body: bytes | None, upstream: Upstream, checkout: RepositoryCheckout | None, *, has_token: bool
) -> RepositoryProblem | None:
    where = f"{upstream.authority}{upstream.path}"
    if status == 401:
        detail = "refused the credentials" if has_token else "requires credentials and none were given"
        return RepositoryProblem(
            type="repository_authentication_error",
            message=f"{where} {detail}; update the resource's authorization_token (sessions.resources.update)",
        )
    if status == 403:
        return RepositoryProblem(
            type="repository_forbidden_error",
            message=f"{where} refused access to the repository; give a token with read (and push) access",
        )
    if status == 404:
        return RepositoryProblem(type="repository_not_found_error", message=f"{where} reports no such repository")
    if status != 200:
        return RepositoryProblem(
            type="repository_clone_error", message=f"{where} answered HTTP {status} to the clone; retry later"
        )
    branch = checkout.name if checkout is not None and checkout.type == "branch" else None
    if branch and body is not None and f"refs/heads/{branch}" not in _refs_in(body):
        return RepositoryProblem(type="repository_checkout_error", message=f"{where} has no branch {branch!r}")
    return None
