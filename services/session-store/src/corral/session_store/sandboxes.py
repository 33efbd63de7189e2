"""Telling sandbox-manager that a session's sandbox can go (the session was archived or deleted).

Best effort by design: if sandbox-manager is down or slow, its idle timeout and orphan reaper remove
the container later; the archive or delete itself never waits on it or fails because of it.
"""

from __future__ import annotations

import logging

from corral.bus import BusError
from corral.contracts.rpc import RpcReply
from corral.contracts.sandbox import Release, SandboxOp, sandbox_rpc
from corral.session_store.service import Deps

logger = logging.getLogger(__name__)

_TIMEOUT_S = 5.0


async def release(deps: Deps, session_id: str, reason: str) -> None:
    request = Release(session_id=session_id, reason=reason).model_dump_json().encode()
    try:
        raw = await deps.bus.request(sandbox_rpc(SandboxOp.RELEASE), request, timeout=_TIMEOUT_S)
        reply = RpcReply.model_validate_json(raw)
    except (BusError, TimeoutError, ValueError) as exc:
        logger.warning(
            "could not release the session's sandbox; the reaper will remove it",
            extra={"fields": {"session_id": session_id, "error": type(exc).__name__}},
        )
        return
    if not reply.ok:
        logger.warning(
            "sandbox-manager refused to release the session's sandbox",
            extra={"fields": {"session_id": session_id, "error": reply.error.message if reply.error else ""}},
        )
