"""Bodies too large for one message: stored in the ``corral_bodies`` object store, named in a header."""

from __future__ import annotations

import contextlib
import uuid

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors
from nats.js.object_store import ObjectStore

from corral.bus import records
from corral.bus.cancellation import honouring_cancel
from corral.contracts import headers as h
from corral.contracts import subjects


class Bodies:
    """The bodies store of one connection, bound (or created) on first use."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._store: ObjectStore | None = None

    async def _bound(self) -> ObjectStore:
        if self._store is None:
            try:
                self._store = await self._js.object_store(subjects.BODIES_BUCKET)
            except js_errors.BucketNotFoundError:
                self._store = await self._js.create_object_store(
                    subjects.BODIES_BUCKET, config=js_api.ObjectStoreConfig(ttl=subjects.BODIES_TTL_S)
                )
        return self._store

    async def spill(self, data: bytes) -> dict[str, str]:
        """Put a body too large for one message in the bodies store; the header that names it."""
        name = uuid.uuid4().hex
        await honouring_cancel((await self._bound()).put(name, data))
        return {h.BODY_REF: name}

    async def unspill(self, data: bytes, headers: dict[str, str]) -> bytes:
        """The body a message carries: itself, or the one its ``Corral-Body-Ref`` names (read once)."""
        name = headers.get(h.BODY_REF)
        if name is None:
            return data
        store = await self._bound()
        result = await honouring_cancel(store.get(name))
        with contextlib.suppress(Exception):
            await store.delete(name)
        return bytes(result.data or b"")


def fits(data: bytes, max_payload: int) -> bool:
    """Whether ``data`` travels as one message (room left for the headers)."""
    return len(data) <= max_payload - records.HEADER_ROOM
