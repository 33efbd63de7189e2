"""A session's way out, asked of the credential-proxy (``corral.contracts.egress``).

Sandboxes never get a network interface besides loopback. When a session's environment allows
network access, the sandbox-manager opens the session's egress proxy before starting its container:
the credential-proxy answers with a host directory holding only that session's proxy socket, which
is bind-mounted read-only at ``SANDBOX_EGRESS_DIR``; the exec agent relays ``127.0.0.1:<port>`` to it
and ``HTTP_PROXY``/``HTTPS_PROXY`` point there. The proxy knows the session from the socket a
connection arrives on, and decides per request which hosts it may reach. The grant is closed when
the session's sandbox is released for good.

**Which credential-proxy.** The socket is made on the machine of the credential-proxy that opened
it, and only an engine on that machine can mount it. With ``CORRAL_SANDBOX_EGRESS_HOST`` set, every
``open`` and ``close`` (a session's, a pooled sandbox's, an image build's) goes to that host's
credential-proxy alone (``on_egress_host``); when it does not answer there is no egress, never another
machine's socket. Unset, any credential-proxy answers (the queue group), as on one machine.

**Credentials at egress.** A session with vaults (``SessionVaults``) has its workspace and vault ids
put in the policy it opens with; the credential-proxy answers with a placeholder for each of the
vaults' ``environment_variable`` credentials and the PEM of the session's interception CA, never a
secret. The sandbox's environment gets each ``secret_name`` set to its placeholder, and the exec
agent writes a trust bundle, the image's system bundle plus that CA, at ``SANDBOX_CA_BUNDLE``, which
``SSL_CERT_FILE``, ``CURL_CA_BUNDLE``, ``REQUESTS_CA_BUNDLE``, ``GIT_SSL_CAINFO`` and
``NODE_EXTRA_CA_CERTS`` name. The proxy substitutes the real values on the way out, for the hosts
each credential is bound to only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Final, Protocol, TypeVar

from pydantic import BaseModel

from corral.bus import Bus, BusError, NoResponders
from corral.contracts.api.errors import ApiError
from corral.contracts.egress import (
    EGRESS_SOCKET_NAME,
    SANDBOX_EGRESS_DIR,
    SANDBOX_PROXY_PORT,
    CloseEgress,
    EgressOps,
    EgressPolicy,
    OpenEgress,
    on_egress_host,
)
from corral.contracts.operation import Operation
from corral.contracts.sandbox import Execute, Provision

logger = logging.getLogger(__name__)

_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")

#: How long the credential-proxy gets to answer ``open`` / ``close``.
REQUEST_TIMEOUT_S: Final = 5.0

NO_EGRESS_NOTICE: Final = (
    "This environment allows network access, but this deployment could not give this sandbox its egress "
    "proxy ({why}), so it has no network (loopback only): downloads and remote requests will fail."
)


class EgressUnavailable(Exception):
    """The credential-proxy did not open the session's egress; ``str()`` says why, for a notice."""


#: Where the exec agent writes the sandbox's trust bundle (the image's CAs and the session's egress CA).
SANDBOX_CA_BUNDLE: Final = "/tmp/corral-ca-bundle.pem"
#: The variables that point TLS clients at ``SANDBOX_CA_BUNDLE`` (OpenSSL, curl, requests, git, node).
CA_BUNDLE_VARIABLES: Final = (
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
)
#: Variables the sandbox-manager sets itself: a credential named like one of them is not set.
_RESERVED: Final = frozenset(
    {"HOME", "LANG", "TERM", "PAGER", "GIT_PAGER", "PATH", "PYTHONDONTWRITEBYTECODE", "NO_PROXY", "no_proxy"}
    | {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", *CA_BUNDLE_VARIABLES}
)


@dataclass(frozen=True)
class SessionVaults:
    """The session's workspace and vaults, whose ``environment_variable`` credentials its egress substitutes."""

    workspace_id: str
    vault_ids: tuple[str, ...]

    def policy(self, policy: EgressPolicy) -> EgressPolicy:
        return policy.model_copy(update={"workspace_id": self.workspace_id, "vault_ids": list(self.vault_ids)})


def vaults_of(request: Provision | Execute) -> SessionVaults | None:
    """The request's vaults, or ``None`` when it names none (or no workspace to read them in)."""
    if not request.vault_ids or not request.workspace_id:
        return None
    return SessionVaults(request.workspace_id, tuple(request.vault_ids))


@dataclass(frozen=True)
class EgressMount:
    """How a container reaches its session's proxy: the host directory to mount and the agent's relay;
    with credentials at egress, their placeholders and the session's CA (PEM)."""

    host_directory: str
    credential_environment: dict[str, str] = field(default_factory=dict)
    ca_certificate: str | None = None

    @property
    def socket_in_sandbox(self) -> str:
        return str(PurePosixPath(SANDBOX_EGRESS_DIR) / EGRESS_SOCKET_NAME)

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{SANDBOX_PROXY_PORT}"

    def environment(self) -> dict[str, str]:
        """Proxy variables in both spellings (curl reads only the lower-case ones)."""
        url = self.proxy_url
        return {
            "HTTP_PROXY": url,
            "HTTPS_PROXY": url,
            "http_proxy": url,
            "https_proxy": url,
            "NO_PROXY": "localhost,127.0.0.1,::1",
            "no_proxy": "localhost,127.0.0.1,::1",
            **self.credential_variables(),
            **(dict.fromkeys(CA_BUNDLE_VARIABLES, SANDBOX_CA_BUNDLE) if self.ca_certificate else {}),
        }

    def credential_variables(self) -> dict[str, str]:
        """Each credential's ``secret_name`` set to its placeholder (never a variable of the manager's own)."""
        return {k: v for k, v in self.credential_environment.items() if k not in _RESERVED}


class Egress(Protocol):
    async def open(self, session_id: str, policy: EgressPolicy) -> EgressMount: ...

    async def close(self, session_id: str) -> None: ...


class BusEgress:
    """``Egress`` over the ``EgressOps`` operations: those of host ``host``'s credential-proxy
    (``corral.rpc.egress.host.<host>.*``), or of any (``corral.rpc.egress.*``) when ``host`` is ``None``."""

    def __init__(self, bus: Bus, *, host: str | None = None) -> None:
        self._bus = bus
        self._host = host

    def route(self, op: Operation[_Req, _Rep]) -> Operation[_Req, _Rep]:
        """``op`` as this manager sends it: to its host's credential-proxy when it has one."""
        return op if self._host is None else on_egress_host(op, self._host)

    async def open(self, session_id: str, policy: EgressPolicy) -> EgressMount:
        """The session's proxy, opened (or re-opened with ``policy``) now.

        Raises:
            EgressUnavailable: no credential-proxy answered, or it refused (egress not configured).
        """
        opened = await self._call(EgressOps.OPEN, OpenEgress(session_id=session_id, policy=policy))
        if opened.socket_name != EGRESS_SOCKET_NAME:
            raise EgressUnavailable(f"the credential-proxy named an unexpected socket {opened.socket_name!r}")
        return EgressMount(
            host_directory=opened.directory,
            credential_environment=dict(opened.credential_environment),
            ca_certificate=opened.ca_certificate,
        )

    async def close(self, session_id: str) -> None:
        """Drop the session's proxy (best effort: a failure is logged, the grant stays until closed)."""
        try:
            await self._call(EgressOps.CLOSE, CloseEgress(session_id=session_id))
        except EgressUnavailable as exc:
            logger.warning("could not close a session's egress: %s", exc, extra={"fields": {"session_id": session_id}})

    async def _call(self, op: Operation[_Req, _Rep], request: _Req) -> _Rep:
        try:
            return await self._bus.call(self.route(op), request, timeout=REQUEST_TIMEOUT_S)
        except NoResponders:
            if self._host is not None:
                raise EgressUnavailable(
                    f"no credential-proxy of host {self._host} is running (CORRAL_SANDBOX_EGRESS_HOST): start one "
                    f"with CORRAL_CREDENTIAL_PROXY_HOST_ID={self._host} on this machine"
                ) from None
            raise EgressUnavailable("no credential-proxy is running") from None
        except TimeoutError:
            raise EgressUnavailable(f"the credential-proxy did not answer within {REQUEST_TIMEOUT_S:g} s") from None
        except ApiError as exc:
            raise EgressUnavailable(exc.message) from None
        except BusError as exc:  # UnreadableReply among them
            raise EgressUnavailable(f"the credential-proxy's reply was unreadable ({exc})") from None
