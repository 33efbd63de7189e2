"""Key-value buckets as Corral declares them (``KeyValueSpec``): created by their owner when
missing, bound to by everyone else, and refused (``StreamMismatch``) when configured otherwise."""

from __future__ import annotations

import contextlib

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors
from nats.js.kv import KeyValue

from corral.bus.errors import StreamMismatch
from corral.contracts.subjects import KeyValueSpec


def _enum_value(value: object) -> str:
    return str(getattr(value, "value", value))


async def ensure(js: JetStreamContext, spec: KeyValueSpec) -> KeyValue:
    """The owner's side: create the bucket when missing, then check it."""
    try:
        kv = await js.key_value(spec.name)
    except js_errors.BucketNotFoundError:
        with contextlib.suppress(js_errors.BadRequestError):  # created concurrently by a sibling
            await js.create_key_value(
                bucket=spec.name,
                description=spec.description,
                ttl=spec.ttl_s,
                history=spec.history,
                storage=js_api.StorageType(spec.storage),
            )
        kv = await js.key_value(spec.name)
    await check(kv, spec, fix="remove the bucket (nats kv rm {name}) and start {owner} again")
    return kv


async def bind(js: JetStreamContext, spec: KeyValueSpec) -> KeyValue | None:
    """A reader's side: the bucket checked against ``spec``, or ``None`` while its owner has not made it."""
    try:
        kv = await js.key_value(spec.name)
    except js_errors.BucketNotFoundError:
        return None
    await check(kv, spec, fix="give this service the same settings as {owner}, the bucket's owner")
    return kv


async def check(kv: KeyValue, spec: KeyValueSpec, *, fix: str) -> None:
    status = await kv.status()
    found = {
        "ttl_s": float(status.ttl or 0),
        "history": status.history,
        "storage": _enum_value(status.stream_info.config.storage),
    }
    expected = {"ttl_s": spec.ttl_s, "history": spec.history, "storage": spec.storage}
    diff = {k: (found[k], expected[k]) for k in expected if found[k] != expected[k]}
    if diff:
        detail = ", ".join(f"{k} is {v[0]!r}, expected {v[1]!r}" for k, v in diff.items())
        raise StreamMismatch(
            f"key-value bucket {spec.name} exists with a different configuration ({detail}); "
            + fix.format(name=spec.name, owner=spec.owner)
        )
