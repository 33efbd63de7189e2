"""Telling sandbox-manager that a session's sandbox can go (the session was archived or deleted).

Best effort by design: if sandbox-manager is down or slow, its idle timeout and orphan reaper remove
the container later; the archive or delete itself never waits on it or fails because of it.
"""

from __future__ import annotations

import logging

from corral.bus import BusError
from corral.contracts.api.errors import ApiError
from corral.contracts.sandbox import Release, SandboxOps
from corral.session_store.service import Deps

logger = logging.getLogger(__name__)

_TIMEOUT_S = 5.0


async def release(deps: Deps, session_id: str, reason: str) -> None:
    try:
        await deps.bus.call(SandboxOps.RELEASE, Release(session_id=session_id, reason=reason), timeout=_TIMEOUT_S)
    except (BusError, TimeoutError) as exc:
        logger.warning(
            "could not release the session's sandbox; the reaper will remove it",
            extra={"fields": {"session_id": session_id, "error": type(exc).__name__}},
        )
    except ApiError as exc:
        logger.warning(
            "sandbox-manager refused to release the session's sandbox",
            extra={"fields": {"session_id": session_id, "error": exc.message}},
        )
