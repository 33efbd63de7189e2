"""What the sandbox-manager keeps on the bus (JetStream KV), so a restart loses nothing it needs.

``corral_tool_results`` (``TOOL_RESULTS_BUCKET``), key ``<session_id>.<tool_use_id>``:
    ``started`` when a call begins, ``done`` with its ``ToolOutcome`` before the reply is sent. A
    repeated call finds ``done`` and answers from it; one that finds ``started`` with no run in
    progress here was cut short by a manager restart, and is answered with an error rather than run
    again (a side effect runs at most once).

    An outcome too large for one entry (``INLINE_OUTCOME_BYTES``: a tool's output is kept up to
    the output limit, 8 MiB by default) is stored first in the object store
    ``corral_tool_outputs`` (``TOOL_OUTPUTS_BUCKET``) under the same key, with the same retention,
    and the ``done`` entry says so (``outcome_stored``). A manager that dies between the two leaves
    ``started`` (answered as interrupted) and an object that expires.

``corral_sandboxes`` (``SANDBOXES_BUCKET``):
    ``session.<session_id>`` -> ``SessionRecord`` (the container serving it, or why it has none), and
    ``container.<container_id>`` -> the session id. Container labels cannot change after creation,
    so a pooled container claimed by a session is mapped back to it through this second key when the
    manager restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict

from corral.bus import Bus, KeyChanged, KeyExists, KeyValueBucket, ObjectBucket
from corral.contracts.sandbox import (
    TOOL_OUTPUTS_BUCKET,
    TextBlock,
    ToolOutcome,
    tool_result_key,
)
from corral.contracts.subjects import ObjectBucketSpec, sandboxes_spec, tool_results_spec

#: The largest ``done`` entry written with its outcome in it; a larger outcome goes to the object store.
INLINE_OUTCOME_BYTES = 256 * 1024
#: What a repeated call is answered when its outcome was stored apart and is gone (expired).
OUTCOME_GONE = (
    "this tool call already ran, but its recorded output is no longer available; it was not run again, to "
    "avoid repeating its side effects"
)


class ToolRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    state: Literal["started", "done"]
    at: float
    outcome: ToolOutcome | None = None
    #: The outcome is in ``TOOL_OUTPUTS_BUCKET`` under the entry's key (too large for the entry).
    outcome_stored: bool = False


SessionState = Literal["live", "lost", "idle", "released"]


class SessionRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    state: SessionState
    container_id: str | None = None
    environment_id: str | None = None
    #: Why the session has no container (``state`` other than ``live``), in words for a notice.
    reason: str | None = None
    #: The sandbox host that wrote it (``CORRAL_SANDBOX_HOST_ID``); ``None`` in records older than hosts.
    host: str | None = None
    at: float


async def _put(kv: KeyValueBucket, key: str, value: bytes) -> None:
    for _ in range(8):
        entry = await kv.get(key)
        try:
            if entry is None:
                await kv.create(key, value)
            else:
                await kv.update(key, value, last=entry.revision)
            return
        except (KeyExists, KeyChanged):
            continue
    raise KeyChanged(key)


async def _write(kv: KeyValueBucket, key: str, value: bytes, *, last: int | None) -> None:
    """Write ``key`` expecting revision ``last`` (0: absent); when that guess is wrong, read and retry."""
    try:
        if last == 0:
            await kv.create(key, value)
            return
        if last is not None:
            await kv.update(key, value, last=last)
            return
    except (KeyExists, KeyChanged):
        pass
    await _put(kv, key, value)


async def _delete(kv: KeyValueBucket, key: str) -> None:
    entry = await kv.get(key)
    if entry is not None:
        with contextlib.suppress(KeyChanged):
            await kv.delete(key, last=entry.revision)


class ToolRecords:
    def __init__(self, kv: KeyValueBucket, outputs: ObjectBucket) -> None:
        self._kv = kv
        self._outputs = outputs

    @classmethod
    async def open(cls, bus: Bus, *, ttl_s: float) -> ToolRecords:
        return cls(
            await bus.ensure_key_value(tool_results_spec(ttl_s)),
            await bus.object_bucket(
                ObjectBucketSpec(
                    name=TOOL_OUTPUTS_BUCKET,
                    description="Tool outcomes too large for their corral_tool_results entry, under the same key.",
                    storage="file",
                    ttl_s=ttl_s,
                )
            ),
        )

    async def get(self, session_id: str, tool_use_id: str) -> ToolRecord | None:
        key = tool_result_key(session_id, tool_use_id)
        entry = await self._kv.get(key)
        if entry is None:
            return None
        record = ToolRecord.model_validate_json(entry.value)
        if not record.outcome_stored:
            return record
        stored = await self._outputs.get(key)
        if stored is None:
            gone = ToolOutcome(content=[TextBlock(text=OUTCOME_GONE)], is_error=True, executed=False, duration_ms=0.0)
            return record.model_copy(update={"outcome": gone})
        return record.model_copy(update={"outcome": ToolOutcome.model_validate_json(stored)})

    async def claim(self, session_id: str, tool_use_id: str) -> int | None:
        """Mark the call started; the record's revision, or ``None`` when a record already exists."""
        record = ToolRecord(state="started", at=time.time())
        try:
            return await self._kv.create(tool_result_key(session_id, tool_use_id), record.model_dump_json().encode())
        except KeyExists:
            return None

    async def finish(
        self, session_id: str, tool_use_id: str, outcome: ToolOutcome, *, claimed: int | None = None
    ) -> None:
        """Record the outcome (over the ``started`` record at revision ``claimed``, when known)."""
        key = tool_result_key(session_id, tool_use_id)
        value = ToolRecord(state="done", at=time.time(), outcome=outcome).model_dump_json().encode()
        if len(value) > INLINE_OUTCOME_BYTES:
            await self._outputs.put(key, outcome.model_dump_json().encode())
            value = ToolRecord(state="done", at=time.time(), outcome_stored=True).model_dump_json().encode()
        if claimed is not None:
            with contextlib.suppress(KeyChanged):
                await self._kv.update(key, value, last=claimed)
                return
        await _put(self._kv, key, value)


class SandboxRecords:
    def __init__(self, kv: KeyValueBucket) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, bus: Bus, *, ttl_s: float) -> SandboxRecords:
        return cls(await bus.ensure_key_value(sandboxes_spec(ttl_s)))

    async def bind(
        self,
        session_id: str,
        container_id: str,
        environment_id: str | None,
        *,
        last: int | None = None,
        host: str | None = None,
    ) -> None:
        """Record that ``container_id`` (on sandbox host ``host``) serves the session (``last``: the
        session record's revision as just read, ``0`` for none, which saves reading it again)."""
        record = SessionRecord(
            state="live", container_id=container_id, environment_id=environment_id, host=host, at=time.time()
        )
        await asyncio.gather(
            _write(self._kv, f"container.{container_id}", session_id.encode(), last=0),
            _write(self._kv, f"session.{session_id}", record.model_dump_json().encode(), last=last),
        )

    async def session(self, session_id: str) -> SessionRecord | None:
        return (await self.session_entry(session_id))[0]

    async def session_entry(self, session_id: str) -> tuple[SessionRecord | None, int]:
        """The session's record and its revision (``None, 0`` when it has none)."""
        entry = await self._kv.get(f"session.{session_id}")
        if entry is None:
            return None, 0
        return SessionRecord.model_validate_json(entry.value), entry.revision

    async def owner(self, container_id: str) -> str | None:
        """The session a container serves, when it is still that session's live container."""
        entry = await self._kv.get(f"container.{container_id}")
        if entry is None:
            return None
        session_id = entry.value.decode()
        record = await self.session(session_id)
        if record is None or record.state != "live" or record.container_id != container_id:
            return None
        return session_id

    async def unbind(self, session_id: str, container_id: str, state: SessionState, reason: str) -> None:
        """The session no longer has ``container_id``: say why, for the next sandbox's notice."""
        current = await self.session(session_id)
        if current is None or current.container_id in (None, container_id):
            record = SessionRecord(
                state=state,
                container_id=None,
                environment_id=current.environment_id if current else None,
                reason=reason,
                at=time.time(),
            )
            await _put(self._kv, f"session.{session_id}", record.model_dump_json().encode())
        await _delete(self._kv, f"container.{container_id}")

    async def forget(self, session_id: str) -> None:
        await _delete(self._kv, f"session.{session_id}")
