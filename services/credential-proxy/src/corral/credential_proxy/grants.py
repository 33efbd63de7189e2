"""The egress grants the credential-proxy keeps on the bus, so a restart keeps serving running sandboxes.

``corral_egress`` (``EGRESS_BUCKET``), key ``<session_id>`` -> ``Grant``: the policy the session's
proxy applies. Where it listens follows from the session id (``<socket_dir>/<session_id>/proxy.sock``),
so it is not recorded; grants written by versions that listened on TCP carry ``listen_host`` and
``port`` too, which are ignored. Written by ``open`` (each write restarts the bucket's time-to-live),
deleted by ``close``, read back at start-up. Each grant names the host whose credential-proxy wrote it
(``CORRAL_CREDENTIAL_PROXY_HOST_ID``): its socket is on that machine, so only that host's credential-proxy
serves it again (a grant written before hosts names none, and any credential-proxy serves it).
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.bus import Bus, KeyValueBucket
from corral.contracts.egress import SESSION_ID_PATTERN, EgressPolicy
from corral.contracts.subjects import egress_spec


class Grant(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    policy: EgressPolicy
    at: float
    #: The host whose credential-proxy made the socket; ``None`` in grants written before hosts.
    host: str | None = None


class UnreadableGrant(Exception):
    """A stored grant that does not load (written by an incompatible version)."""


class Grants:
    def __init__(self, kv: KeyValueBucket, *, host: str | None = None) -> None:
        self._kv = kv
        self._host = host

    @classmethod
    async def open(cls, bus: Bus, *, ttl_s: float, host: str | None = None) -> Grants:
        return cls(await bus.ensure_key_value(egress_spec(ttl_s)), host=host)

    def mine(self, grant: Grant) -> bool:
        """Whether this host serves ``grant``: it made it, or the grant names no host."""
        return grant.host is None or grant.host == self._host

    async def put(self, session_id: str, policy: EgressPolicy) -> Grant:
        grant = Grant(session_id=session_id, policy=policy, at=time.time(), host=self._host)
        await self._kv.put(session_id, grant.model_dump_json().encode())
        return grant

    async def get(self, session_id: str) -> Grant | None:
        """The session's grant, ``None`` when it has none.

        Raises:
            UnreadableGrant: the stored value does not load.
        """
        entry = await self._kv.get(session_id)
        if entry is None:
            return None
        try:
            grant = Grant.model_validate_json(entry.value)
        except ValidationError as exc:
            raise UnreadableGrant(f"the egress grant of session {session_id} does not load: {exc}") from None
        if grant.session_id != session_id:
            raise UnreadableGrant(f"the egress grant under {session_id} names session {grant.session_id}")
        return grant

    async def delete(self, session_id: str) -> bool:
        """Forget the session's grant; ``False`` when it had none."""
        if await self._kv.get(session_id) is None:
            return False
        await self._kv.delete(session_id)
        return True

    async def sessions(self) -> list[str]:
        return sorted(await self._kv.keys())
