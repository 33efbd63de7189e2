"""Warm pools: pre-started sandboxes per container spec, so a provision is a dictionary pop.

A spec with network ``egress`` (the API's default, ``unrestricted``, and ``limited`` with hosts) is
pooled too: each of its containers has an egress slot of its own, allowing nothing until a session
claims it and the slot gets that session's policy (``sandboxes.Launcher.start_pooled``). When no slot
can be opened (no credential-proxy), that spec is not pooled until a session asks for it again.

A pool exists for each spec that was asked for recently (the default one from start-up; the
``pool_configs`` most recently used in all), and is refilled in the background, one container at
a time, whenever it falls below ``pool_size``. Pooled containers carry the label ``corral.pool=true``
and no session: labels cannot change, so a claim is recorded in memory here and in the
``container.<id>`` record (see ``records``) by the caller.

On a clean stop the pooled containers are removed; after a crash the start-up reconciliation
(``reaper.Reaper.reconcile``) puts the unclaimed ones back into their pool or removes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque

from corral.sandbox_manager.container_spec import ContainerSpec
from corral.sandbox_manager.egress import EgressUnavailable
from corral.sandbox_manager.sandboxes import Launcher, Sandbox

logger = logging.getLogger(__name__)

_RETRY_S = 5.0


class Pool:
    def __init__(self, launcher: Launcher, *, size: int, max_configs: int) -> None:
        self._launcher = launcher
        self.size = size
        self._max_configs = max_configs
        self._specs: OrderedDict[str, ContainerSpec] = OrderedDict()
        self._ready: dict[str, deque[Sandbox]] = {}
        self._unwanted: list[Sandbox] = []
        self._wake = asyncio.Event()

    def want(self, spec: ContainerSpec) -> None:
        """Keep a pool for ``spec`` (the least recently wanted one beyond ``max_configs`` is dropped)."""
        if self.size == 0:
            return
        self._specs[spec.hash] = spec
        self._specs.move_to_end(spec.hash)
        self._ready.setdefault(spec.hash, deque())
        while len(self._specs) > self._max_configs:
            dropped, _ = self._specs.popitem(last=False)
            self._unwanted.extend(self._ready.pop(dropped, ()))
        self._wake.set()

    def take(self, spec: ContainerSpec) -> Sandbox | None:
        """A ready sandbox for ``spec``, or ``None`` when its pool is empty (a refill is started)."""
        self.want(spec)
        ready = self._ready.get(spec.hash)
        while ready:
            sandbox = ready.popleft()
            if sandbox.alive:
                sandbox.from_pool = True
                return sandbox
            self._unwanted.append(sandbox)
        return None

    def offer(self, sandbox: Sandbox) -> bool:
        """Put back an unclaimed pooled container found at start-up; ``False`` when it is not wanted."""
        ready = self._ready.get(sandbox.spec_hash)
        if ready is None or len(ready) >= self.size or not sandbox.alive:
            return False
        ready.append(sandbox)
        return True

    def knows(self, container_id: str) -> bool:
        return any(s.container_id == container_id for ready in self._ready.values() for s in ready)

    def sizes(self) -> dict[str, int]:
        return {spec_hash: sum(1 for s in ready if s.alive) for spec_hash, ready in self._ready.items()}

    async def run(self) -> None:
        """Refill every pool, then wait until one is drawn from; forever."""
        while True:
            self._wake.clear()
            await self._discard_unwanted()
            short = self._next_short()
            if short is None:
                await self._wake.wait()
                continue
            try:
                sandbox = await self._launcher.start_pooled(short)
            except asyncio.CancelledError:
                raise
            except EgressUnavailable as exc:
                # No credential-proxy (yet): this spec's sandboxes start cold until one is asked for again.
                logger.warning(
                    "could not open an egress slot for a pooled sandbox; not pooling this spec until it is asked for",
                    extra={"fields": {"spec": short.hash, "error": str(exc)[:300]}},
                )
                self._drop(short.hash)
                continue
            except Exception:
                logger.warning("could not start a pooled sandbox; retrying", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_RETRY_S):
                        await self._wake.wait()
                continue
            ready = self._ready.get(short.hash)
            if ready is None:
                self._unwanted.append(sandbox)
            else:
                ready.append(sandbox)

    def _drop(self, spec_hash: str) -> None:
        self._specs.pop(spec_hash, None)
        self._unwanted.extend(self._ready.pop(spec_hash, ()))

    def _next_short(self) -> ContainerSpec | None:
        for spec_hash in reversed(self._specs):
            ready = self._ready[spec_hash]
            for dead in [s for s in ready if not s.alive]:
                ready.remove(dead)
                self._unwanted.append(dead)
            if len(ready) < self.size:
                return self._specs[spec_hash]
        return None

    async def _discard_unwanted(self) -> None:
        unwanted, self._unwanted = self._unwanted, []
        for sandbox in unwanted:
            await self._launcher.discard(sandbox, "pool")

    async def close(self) -> None:
        """Remove every pooled container (a restart starts new ones in a moment)."""
        for ready in self._ready.values():
            self._unwanted.extend(ready)
            ready.clear()
        await self._discard_unwanted()
