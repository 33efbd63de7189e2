"""A JetStream object store: values of any size under a name, as used for tool outputs too large
for a key-value entry (one message)."""

from __future__ import annotations

import contextlib

from nats.js import errors as js_errors
from nats.js.object_store import ObjectStore

from corral.bus.cancellation import honouring_cancel


class ObjectBucket:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    async def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` (replacing what it held)."""
        await honouring_cancel(self._store.put(name, data))

    async def get(self, name: str) -> bytes | None:
        """What ``name`` holds; ``None`` when it holds nothing (never stored, deleted or expired)."""
        try:
            result = await honouring_cancel(self._store.get(name))
        except (js_errors.ObjectNotFoundError, js_errors.ObjectDeletedError):
            return None
        return bytes(result.data or b"")

    async def delete(self, name: str) -> None:
        """Drop ``name`` (nothing happens when it holds nothing)."""
        with contextlib.suppress(js_errors.ObjectNotFoundError, js_errors.ObjectDeletedError):
            await honouring_cancel(self._store.delete(name))
