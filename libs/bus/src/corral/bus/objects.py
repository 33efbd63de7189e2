"""A JetStream object store: values of any size, chunked over the bucket's stream by nats-py.

Used where a value may pass the server's ``max_payload`` (a KV value may not): the harness's
snapshots of a session's folded log.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors
from nats.js.object_store import ObjectStore

from corral.bus.cancellation import honouring_cancel
from corral.bus.errors import StreamMismatch
from corral.bus.settling import find_or_make, patiently
from corral.contracts.subjects import ObjectBucketSpec


async def open_store(js: JetStreamContext, spec: ObjectBucketSpec, *, replicas: int = 1) -> ObjectStore:
    """Bind to the object store ``spec`` describes, creating it when missing (with ``replicas``
    copies); refuse (``StreamMismatch``) one with another number of replicas."""
    config = js_api.ObjectStoreConfig(
        bucket=spec.name,
        description=spec.description,
        ttl=spec.ttl_s,
        storage=js_api.StorageType(spec.storage),
        replicas=replicas,
    )

    async def make() -> object:
        return await js.create_object_store(spec.name, config=config)

    # On a cluster the store just made (here or by a sibling) may not show on this server yet.
    store = await find_or_make(lambda: js.object_store(spec.name), make, missing=js_errors.BucketNotFoundError)
    found = int((await patiently(store.status)).stream_info.config.num_replicas or 1)
    if found != replicas:
        raise StreamMismatch(
            f"object store {spec.name} exists with a different configuration (replicas is {found}, expected "
            f"{replicas}); this service is configured for {replicas} (CORRAL_NATS_REPLICAS={replicas}): change "
            f"its replicas (nats stream edit OBJ_{spec.name} --replicas {replicas}), or set "
            f"CORRAL_NATS_REPLICAS={found} for every service"
        )
    return store


class ObjectBucket:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    async def get(self, name: str) -> bytes | None:
        """The object's bytes; ``None`` when there is none (never written, deleted or expired)."""
        try:
            result = await honouring_cancel(self._store.get(name))
        except (js_errors.ObjectNotFoundError, js_errors.ObjectDeletedError, js_errors.NotFoundError):
            return None
        return bytes(result.data or b"")

    async def put(self, name: str, data: bytes) -> None:
        """Write the object whole (replacing any previous one; readers see the old or the new)."""
        await honouring_cancel(self._store.put(name, data))

    async def delete(self, name: str) -> None:
        try:
            await honouring_cancel(self._store.delete(name))
        except (js_errors.ObjectNotFoundError, js_errors.ObjectDeletedError, js_errors.NotFoundError):
            return
