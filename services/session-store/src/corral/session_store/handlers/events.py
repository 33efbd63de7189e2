"""events.append / events.list, and the wake-ups appends cause."""

from __future__ import annotations

import functools
import json
from typing import Any

from corral.contracts.api.errors import conflict
from corral.contracts.rpc import Appended, AppendEvents, ListEvents, Page
from corral.session_store import queries
from corral.session_store.domain.sessions import (
    WAKING_TYPES,
    SessionState,
    check_client_append,
    check_harness_append,
    ensure_exists,
)
from corral.session_store.service import Deps


async def check_lease(deps: Deps, req: AppendEvents) -> None:
    """Refuse (409 ``lease_lost``) a harness's append whose lease is not the session's lease now."""
    if req.lease is None:
        raise conflict("harness appends must carry the session lease", error_code="lease_required")
    # From the bucket's leader: a replica still catching up could answer with the lease as it was
    # before another harness took the session over, and the stale holder's append would be taken.
    entry = await deps.leases.get(req.session_id, leader=True)
    held = json.loads(entry.value) if entry is not None else None
    if not held or held.get("token") != req.lease.token:
        raise conflict(
            f"the lease on session {req.session_id!r} is no longer held by {req.lease.holder!r}",
            error_code="lease_lost",
        )


async def append(deps: Deps, req: AppendEvents) -> Appended:
    events = [dict(e) for e in req.events]
    if req.origin == "client":
        for event in events:  # ids and timestamps are the store's to give
            event.pop("id", None)
            event.pop("processed_at", None)

    def decide(state: SessionState) -> list[dict[str, Any]]:
        ensure_exists(state, req.workspace_id)
        if req.origin == "client":
            check_client_append(state, events)
        else:
            check_harness_append(state, events)
        return [dict(e) for e in events]

    msg_ids: list[str | None] | None = list(req.dedupe_keys) if req.dedupe_keys else None
    # A client's POST is stored whole or not at all; the harness plans each step from the log as it
    # is. A harness's lease is read under the session's lock, before every decision: after any append
    # this store made first (the new holder's, when a late one's request waited for the lock) and
    # again whenever another writer got in first.
    harness = req.origin == "harness"
    state, stored = await deps.log.append(
        req.session_id,
        decide,
        msg_ids=msg_ids,
        expected_last_seq=req.expected_last_seq,
        atomic=not harness,
        check=functools.partial(check_lease, deps, req) if harness else None,
    )
    # Readers wait for the projection themselves (see ``list_``); appends return as soon as the
    # log holds the events.
    if req.origin == "client" and any(s.record.get("type") in WAKING_TYPES for s in stored):
        deps.wakes.send(req.session_id, stored[-1].seq, "input")
    return Appended(events=[s.record for s in stored], last_seq=state.last_seq)


async def list_(deps: Deps, req: ListEvents) -> Page:
    state = await deps.log.state(req.session_id)
    ensure_exists(state, req.workspace_id)
    await deps.caught_up_sessions(max(state.record_seq, await deps.log.tail(req.session_id)))
    async with deps.pool.acquire() as conn:
        return await queries.list_events(conn, req, max_bytes=deps.events_page_bytes)
