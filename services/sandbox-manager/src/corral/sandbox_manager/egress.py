"""A session's way out, asked of the credential-proxy (``corral.contracts.egress``).

Sandboxes never get a network interface besides loopback. When a session's environment allows
network access, the sandbox-manager opens the session's egress proxy before starting its container:
the credential-proxy answers with a host directory holding only that session's proxy socket, which
is bind-mounted read-only at ``SANDBOX_EGRESS_DIR``; the exec agent relays ``127.0.0.1:<port>`` to it
and ``HTTP_PROXY``/``HTTPS_PROXY`` point there. The proxy knows the session from the socket a
connection arrives on, and decides per request which hosts it may reach. The grant is closed when
the session's sandbox is released for good.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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
)
from corral.contracts.operation import Operation

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


@dataclass(frozen=True)
class EgressMount:
    """How a container reaches its session's proxy: the host directory to mount and the agent's relay."""

    host_directory: str

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
        }


class Egress(Protocol):
    async def open(self, session_id: str, policy: EgressPolicy) -> EgressMount: ...

    async def close(self, session_id: str) -> None: ...


class BusEgress:
    """``Egress`` over the ``EgressOps`` operations (``corral.rpc.egress.*``)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def open(self, session_id: str, policy: EgressPolicy) -> EgressMount:
        """The session's proxy, opened (or re-opened with ``policy``) now.

        Raises:
            EgressUnavailable: no credential-proxy answered, or it refused (egress not configured).
        """
        opened = await self._call(EgressOps.OPEN, OpenEgress(session_id=session_id, policy=policy))
        if opened.socket_name != EGRESS_SOCKET_NAME:
            raise EgressUnavailable(f"the credential-proxy named an unexpected socket {opened.socket_name!r}")
        return EgressMount(host_directory=opened.directory)

    async def close(self, session_id: str) -> None:
        """Drop the session's proxy (best effort: a failure is logged, the grant stays until closed)."""
        try:
            await self._call(EgressOps.CLOSE, CloseEgress(session_id=session_id))
        except EgressUnavailable as exc:
            logger.warning("could not close a session's egress: %s", exc, extra={"fields": {"session_id": session_id}})

    async def _call(self, op: Operation[_Req, _Rep], request: _Req) -> _Rep:
        try:
            return await self._bus.call(op, request, timeout=REQUEST_TIMEOUT_S)
        except NoResponders:
            raise EgressUnavailable("no credential-proxy is running") from None
        except TimeoutError:
            raise EgressUnavailable(f"the credential-proxy did not answer within {REQUEST_TIMEOUT_S:g} s") from None
        except ApiError as exc:
            raise EgressUnavailable(exc.message) from None
        except BusError as exc:  # UnreadableReply among them
            raise EgressUnavailable(f"the credential-proxy's reply was unreadable ({exc})") from None
