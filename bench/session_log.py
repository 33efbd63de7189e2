"""A long session's log for ``long_session.py``: filled with agent messages the way a harness
appends them (lease held), and B6's baseline, the same log folded from scratch in this process."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import httpx
from report import ok

from corral.bus import Bus, KeyExists
from corral.contracts.ids import EVENT, new_id
from corral.contracts.rpc import AppendEvents, Lease, Op, RpcReply
from corral.contracts.subjects import lease_spec, store_rpc
from corral.harness.conversation import ConversationBuilder

#: The bench stack's lease TTL (short, so a killed holder's lease expires soon).
LEASE_TTL_S = 3.0


async def fill(bus: Bus, session_id: str, events: int) -> None:
    """Append ``events`` agent messages to an idle session the way a harness would (lease held)."""
    leases = await bus.ensure_key_value(lease_spec(LEASE_TTL_S))
    token = secrets.token_hex(8)
    async with asyncio.timeout(30):
        while True:  # the harness that ran the last turn may still be letting the session go
            try:
                revision = await leases.create(session_id, json.dumps({"holder": "bench", "token": token}).encode())
                break
            except KeyExists:
                await asyncio.sleep(0.01)
    lease = Lease(holder="bench", token=token)

    async def append(batch: list[dict[str, Any]]) -> None:
        request = AppendEvents(workspace_id=None, session_id=session_id, events=batch, origin="harness", lease=lease)
        reply = RpcReply.model_validate_json(
            await bus.request(store_rpc(Op.EVENTS_APPEND), request.model_dump_json().encode(), timeout=30)
        )
        if not reply.ok:
            raise SystemExit(f"append refused: {reply.error}")

    await append([{"type": "session.status_running", "id": new_id(EVENT)}])
    done = 1
    while done < events - 1:
        size = min(100, events - 1 - done)
        batch = [
            {"type": "agent.message", "id": new_id(EVENT), "content": [{"type": "text", "text": f"filler {done + i}"}]}
            for i in range(size)
        ]
        await append(batch)
        done += size
        revision = await leases.update(
            session_id, json.dumps({"holder": "bench", "token": token}).encode(), last=revision
        )
    await append([{"type": "session.status_idle", "id": new_id(EVENT), "stop_reason": {"type": "end_turn"}}])
    await leases.delete(session_id, last=revision)


async def fold_baseline(http: httpx.AsyncClient, session_id: str, times: int) -> tuple[list[float], int]:
    """B6's baseline: the session's log read once through the API, then folded ``times`` times in this
    process with the harness's ``ConversationBuilder`` (ms per fold), and the number of events."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    while True:
        answer = ok(await http.get(f"/v1/sessions/{session_id}/events", params=params))
        events.extend(answer["data"])
        if not answer.get("next_page"):
            break
        params["page"] = answer["next_page"]
    folds: list[float] = []
    for _ in range(times):
        t0 = time.perf_counter()
        builder = ConversationBuilder()
        for event in events:
            builder.apply(event)
        builder.messages()
        folds.append((time.perf_counter() - t0) * 1000)
    return folds, len(events)
