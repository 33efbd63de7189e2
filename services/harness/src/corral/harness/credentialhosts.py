"""Credential hosts the sandbox could not reach: asked of the credential-proxy after a tool call, logged
as ``credential_host_unreachable_error``.

The session's egress proxy (in the credential-proxy) notes each ``environment_variable`` credential
whose bound host a connection could not reach; it cannot write the session's log, so after each tool
call that ran in the sandbox of a session with vaults, the harness takes the notes
(``EgressOps.FAILURES``) and logs one ``session.error`` per credential, naming the credential and its
vault (never a value), the host and what to check. The turn goes on (``retry_status: retrying``:
the sandbox already got the proxy's 403/502 and the model sees what the tool printed). Taking the
notes is best effort: when the credential-proxy does not answer, nothing is logged for this call.

The notes are in the memory of the credential-proxy holding the session's egress socket, the one of
its sandbox host's machine: the session's placement names the host, whose advertisement names its
egress host (``SandboxHost.egress_host``), and the notes are taken on that credential-proxy's own
subject (``on_egress_host``). Asked on the queue group, any credential-proxy would answer from its
own memory: empty for a session whose socket is on another machine. With no placement, no
advertisement, or a host naming no egress host (one machine), the queue group is asked.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

from pydantic import ValidationError

from corral.bus import Bus, BusError
from corral.contracts.api.errors import ApiError
from corral.contracts.api.events import HarnessEvent
from corral.contracts.egress import CredentialHostFailure, EgressOps, TakeCredentialHostFailures, on_egress_host
from corral.harness import events
from corral.harness.placement import Placements
from corral.harness.runstate import log_fields

logger = logging.getLogger(__name__)

#: How long the credential-proxy's answer is waited for (it answers from memory).
REPLY_TIMEOUT_S: Final = 5.0


class CredentialHosts(Protocol):
    async def take_failures(self, session_id: str) -> list[CredentialHostFailure]: ...


class BusCredentialHosts:
    """``CredentialHosts`` over the bus: ``EgressOps.FAILURES`` of the credential-proxy of the session's
    sandbox host (``placements``: where sessions are; ``None``: always the queue group)."""

    def __init__(self, bus: Bus, *, placements: Placements | None = None, timeout_s: float = REPLY_TIMEOUT_S) -> None:
        self._bus = bus
        self._placements = placements
        self._timeout_s = timeout_s

    async def take_failures(self, session_id: str) -> list[CredentialHostFailure]:
        request = TakeCredentialHostFailures(session_id=session_id)
        op = EgressOps.FAILURES
        egress_host = await self.egress_host(session_id)
        if egress_host is not None:
            op = on_egress_host(op, egress_host)
        return (await self._bus.call(op, request, timeout=self._timeout_s)).failures

    async def egress_host(self, session_id: str) -> str | None:
        """The credential-proxy host of the sandbox host ``session_id`` is placed on, if it names one."""
        if self._placements is None:
            return None
        host = await self._placements.placed(session_id)
        if host is None:
            return None
        advertised = (await self._placements.hosts()).get(host)
        return advertised.egress_host if advertised is not None else None


async def unreachable_errors(hosts: CredentialHosts | None, session_id: str) -> list[HarnessEvent]:
    """One ``credential_host_unreachable_error`` per credential the session's sandbox could not get to
    its host since the last ask; ``[]`` when there is none or the credential-proxy cannot say."""
    if hosts is None:
        return []
    try:
        failures = await hosts.take_failures(session_id)
    except (ApiError, BusError, TimeoutError, ValidationError) as exc:
        logger.warning("could not ask which credential hosts were unreachable: %s", exc, extra=log_fields(session_id))
        return []
    return [unreachable_error(f) for f in failures]


def unreachable_error(failure: CredentialHostFailure) -> HarnessEvent:
    times = "" if failure.attempts == 1 else f" ({failure.attempts} attempts)"
    message = (
        f"The sandbox could not reach {failure.host}:{failure.port}, a host credential {failure.credential_id} "
        f"(vault {failure.vault_id}) is bound to{times}: {failure.reason}. Check that the environment's "
        "networking allows this host, that the credential's networking.allowed_hosts names the right host, "
        "and that the server is up and reachable on that port."
    )
    return events.credential_host_unreachable(failure.credential_id, failure.vault_id, message)
