"""Wake-ups: the hint that a session has input for a harness, and the sweep that re-sends lost ones.

A wake is published after the input is in the log (by ``wakesender``, after the append's reply). If
the store dies between the two, the input is safe but nobody is told; so at start-up, once the
projection has caught up, the store wakes every session that still has unanswered input or was left
running. A wake too many costs a harness one look at the log; a wake too few would strand a session.
"""

from __future__ import annotations

import logging

from corral.contracts.rpc import Wake
from corral.session_store.service import Deps
from corral.session_store.wakesender import publish_wake

logger = logging.getLogger(__name__)

#: Client events that ask a harness to act (see ``domain.sessions.WAKING_TYPES``).
_INPUT_TYPES = ["user.message", "user.interrupt", "user.tool_confirmation", "user.custom_tool_result"]

_PENDING_SQL = """
SELECT s.session_id, s.last_seq
FROM sessions s
WHERE s.archived_at IS NULL AND s.status <> 'terminated' AND (
    s.status IN ('running', 'rescheduling')
    OR EXISTS (
        SELECT 1 FROM events e
        WHERE e.session_id = s.session_id AND e.type = ANY($1::text[])
          AND e.seq > COALESCE(
              (SELECT max(i.seq) FROM events i WHERE i.session_id = s.session_id AND i.type = 'session.status_idle'),
              0)
    )
)
"""


async def sweep(deps: Deps) -> int:
    """Wake every session with input no harness has answered yet; returns how many."""
    rows = await deps.pool.fetch(_PENDING_SQL, _INPUT_TYPES)
    for row in rows:
        await publish_wake(deps.bus, Wake(session_id=row["session_id"], seq=row["last_seq"], reason="sweep"))
    if rows:
        logger.info("woke sessions with pending input", extra={"fields": {"sessions": len(rows)}})
    return len(rows)
