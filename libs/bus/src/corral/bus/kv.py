"""A JetStream key-value bucket with compare-and-set, as used for harness leases and service records."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from nats.js import errors as js_errors
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from corral.bus.cancellation import honouring_cancel
from corral.bus.errors import KeyChanged, KeyExists


@dataclass(frozen=True)
class Entry:
    value: bytes
    revision: int


class KeyValueBucket:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, key: str) -> Entry | None:
        try:
            entry = await honouring_cancel(self._kv.get(key))
        except (js_errors.KeyNotFoundError, js_errors.KeyDeletedError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        return Entry(entry.value, entry.revision)

    async def keys(self) -> list[str]:
        """Every key that currently has a value (deleted and purged keys are left out)."""
        try:
            return list(await honouring_cancel(self._kv.keys()))
        except js_errors.NoKeysError:
            return []

    async def put(self, key: str, value: bytes) -> int:
        """Write ``value`` whatever the key holds (last writer wins); the new revision."""
        return await honouring_cancel(self._kv.put(key, value))

    async def create(self, key: str, value: bytes) -> int:
        """Create ``key`` if nobody holds it; raises ``KeyExists`` otherwise."""
        try:
            return await honouring_cancel(self._kv.create(key, value))
        except js_errors.KeyWrongLastSequenceError as exc:
            raise KeyExists(key) from exc

    async def update(self, key: str, value: bytes, *, last: int) -> int:
        """Replace the value if its revision is still ``last``; raises ``KeyChanged`` otherwise."""
        try:
            return await honouring_cancel(self._kv.update(key, value, last=last))
        except js_errors.KeyWrongLastSequenceError as exc:
            raise KeyChanged(key) from exc

    async def delete(self, key: str, *, last: int | None = None) -> None:
        """Delete ``key`` (if its revision is still ``last``, when given; ``KeyChanged`` otherwise)."""
        try:
            await honouring_cancel(self._kv.delete(key, last=last))
        except js_errors.APIError as exc:
            if exc.err_code in (10071, 10164):
                raise KeyChanged(key) from exc
            raise

    async def wait_gone(self, key: str, *, timeout_s: float) -> bool:
        """Wait until ``key`` has no value (deleted or purged; at once if it has none now), for at
        most ``timeout_s``; whether it is gone. An entry that expires with the bucket's TTL leaves no
        delete mark, so it is not seen here: that is what the bound is for."""
        watcher = await honouring_cancel(self._kv.watch(key))
        try:
            async with asyncio.timeout(timeout_s):
                async for entry in watcher:
                    if entry is None:  # the current value, if any, was delivered before this mark
                        if await self.get(key) is None:
                            return True
                        continue
                    if entry.operation in (KV_DEL, KV_PURGE):
                        return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
        return False
