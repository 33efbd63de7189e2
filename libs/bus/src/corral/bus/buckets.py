"""Key-value buckets as Corral declares them (``KeyValueSpec``): created by their owner when
missing, bound to by everyone else, and refused (``StreamMismatch``) when configured otherwise."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors
from nats.js.kv import KeyValue

from corral.bus.errors import StreamMismatch
from corral.bus.settling import find_or_make, patiently
from corral.contracts.subjects import KeyValueSpec


def _enum_value(value: object) -> str:
    return str(getattr(value, "value", value))


def marker_ttl_s(spec: KeyValueSpec) -> float | None:
    """How long an expiry mark of ``spec``'s bucket is kept (the server takes whole seconds, at least 1)."""
    return float(max(1, round(spec.ttl_s))) if spec.expiry_marks else None


async def ensure(js: JetStreamContext, spec: KeyValueSpec, *, replicas: int = 1) -> KeyValue:
    """The owner's side: create the bucket when missing (with ``replicas`` copies), then check it."""
    kv = await _find_or_make(js, spec, replicas=replicas)
    await patiently(lambda: _add_expiry_marks(js, kv, spec))
    fix = "remove the bucket (nats kv rm {name}) and start {owner} again"
    await patiently(lambda: check(kv, spec, replicas=replicas, fix=fix))
    return kv


async def _find_or_make(js: JetStreamContext, spec: KeyValueSpec, *, replicas: int) -> KeyValue:
    async def make() -> object:
        return await js.create_key_value(
            bucket=spec.name,
            description=spec.description,
            ttl=spec.ttl_s,
            history=spec.history,
            storage=js_api.StorageType(spec.storage),
            replicas=replicas,
        )

    return await find_or_make(lambda: js.key_value(spec.name), make, missing=js_errors.BucketNotFoundError)


async def _add_expiry_marks(js: JetStreamContext, kv: KeyValue, spec: KeyValueSpec) -> None:
    """The owner turns expiry marks on (in place, entries kept): in a bucket it just made (nats-py's
    own option would ask ``$JS.API.INFO``, which services' NATS users may not) or one made before its
    spec asked for them."""
    wanted = marker_ttl_s(spec)
    config = (await kv.status()).stream_info.config
    if wanted is None or config.subject_delete_marker_ttl == wanted:
        return
    await js.update_stream(config.evolve(subject_delete_marker_ttl=wanted, allow_msg_ttl=True))


async def bind(js: JetStreamContext, spec: KeyValueSpec, *, replicas: int = 1) -> KeyValue | None:
    """A reader's side: the bucket checked against ``spec``, or ``None`` while its owner has not made
    it, or has made it and not yet turned its expiry marks on (the owner's second step)."""
    try:
        kv = await patiently(lambda: js.key_value(spec.name))
    except js_errors.BucketNotFoundError:
        return None
    if spec.expiry_marks and (await patiently(kv.status)).stream_info.config.subject_delete_marker_ttl is None:
        return None
    fix = "give this service the same settings as {owner}, the bucket's owner"
    await patiently(lambda: check(kv, spec, replicas=replicas, fix=fix))
    return kv


async def direct(kv: KeyValue) -> bool:
    """Whether the bucket's entries may be read with direct gets (any replica answers)."""
    return bool((await kv.status()).stream_info.config.allow_direct)


async def check(kv: KeyValue, spec: KeyValueSpec, *, replicas: int, fix: str) -> None:
    """Refuse (``StreamMismatch``) a bucket whose settings are not ``spec``'s, or whose number of
    replicas is not ``replicas`` (``CORRAL_NATS_REPLICAS``)."""
    status = await kv.status()
    found = {
        "ttl_s": float(status.ttl or 0),
        "history": status.history,
        "storage": _enum_value(status.stream_info.config.storage),
        "expiry_mark_ttl_s": status.stream_info.config.subject_delete_marker_ttl,
    }
    expected = {
        "ttl_s": spec.ttl_s,
        "history": spec.history,
        "storage": spec.storage,
        "expiry_mark_ttl_s": marker_ttl_s(spec),
    }
    diff = {k: (found[k], expected[k]) for k in expected if found[k] != expected[k]}
    if diff:
        detail = ", ".join(f"{k} is {v[0]!r}, expected {v[1]!r}" for k, v in diff.items())
        raise StreamMismatch(
            f"key-value bucket {spec.name} exists with a different configuration ({detail}); "
            + fix.format(name=spec.name, owner=spec.owner)
        )
    found_replicas = int(status.stream_info.config.num_replicas or 1)
    if found_replicas != replicas:
        raise StreamMismatch(
            f"key-value bucket {spec.name} exists with a different configuration (replicas is {found_replicas}, "
            f"expected {replicas}); this service is configured for {replicas} (CORRAL_NATS_REPLICAS={replicas}): "
            f"change the bucket's replicas to {replicas} (nats stream edit KV_{spec.name} --replicas {replicas}), "
            f"or set CORRAL_NATS_REPLICAS={found_replicas} for every service"
        )
