"""The egress grants the credential-proxy keeps on the bus, so a restart keeps serving running sandboxes.

``corral_egress`` (``EGRESS_BUCKET``), key ``<session_id>`` -> ``Grant``: the policy the session's
proxy applies. Where it listens follows from the session id (``<socket_dir>/<session_id>/proxy.sock``),
so it is not recorded; grants written by versions that listened on TCP carry ``listen_host`` and
``port`` too, which are ignored. Written by ``open`` (each write restarts the bucket's time-to-live),
deleted by ``close``, read back at start-up.
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


class UnreadableGrant(Exception):
    """A stored grant that does not load (written by an incompatible version)."""


class Grants:
    def __init__(self, kv: KeyValueBucket) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, bus: Bus, *, ttl_s: float) -> Grants:
        return cls(await bus.ensure_key_value(egress_spec(ttl_s)))

    async def put(self, session_id: str, policy: EgressPolicy) -> Grant:
        grant = Grant(session_id=session_id, policy=policy, at=time.time())
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
