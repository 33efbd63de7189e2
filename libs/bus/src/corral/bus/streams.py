"""Streams as Corral declares them (``StreamSpec``): created when missing, protections added,
mismatches refused; and what callers may ask of a stream as a whole."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from corral.bus.cancellation import honouring_cancel
from corral.bus.errors import Refused, StreamMismatch
from corral.bus.settling import find_or_make, patiently
from corral.contracts.subjects import ConsumerSpec, StreamSpec


def _enum_value(value: object) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _spec(config: js_api.StreamConfig) -> StreamSpec:
    return StreamSpec(
        name=config.name or "",
        subjects=tuple(config.subjects or ()),
        retention=_enum_value(config.retention) or "",
        storage=_enum_value(config.storage) or "",
        duplicate_window_s=float(config.duplicate_window or 0),
        max_msgs_per_subject=int(config.max_msgs_per_subject if config.max_msgs_per_subject is not None else -1),
        deny_delete=bool(config.deny_delete),
        deny_purge=bool(config.deny_purge),
        allow_atomic=bool(config.allow_atomic),
    )


#: Corral's streams keep every record their retention keeps: a cap on messages, bytes or age would
#: drop session history without anyone asking (the server's "no limit" values).
UNLIMITED: dict[str, object] = {"max_msgs": -1, "max_bytes": -1, "max_age": 0.0}


_ATOMIC_FIX = (
    "Corral stores a client's append in one JetStream atomic batch, which needs nats-server 2.12 or "
    "later: upgrade the server (the stream is then updated on the next start)"
)


def _replicas_fix(kind: str, name: str, found: int, wanted: int) -> str:
    return (
        f"this service is configured for {wanted} (CORRAL_NATS_REPLICAS={wanted}) but the {kind} has {found}: "
        f"change the {kind}'s replicas to {wanted} (nats stream edit {name} --replicas {wanted}; the cluster "
        f"copies its data), or set CORRAL_NATS_REPLICAS={found} for every service"
    )


async def _find_or_make(js: JetStreamContext, spec: StreamSpec, *, replicas: int) -> js_api.StreamInfo:
    async def make() -> object:
        return await js.add_stream(
            name=spec.name,
            subjects=list(spec.subjects),
            retention=js_api.RetentionPolicy(spec.retention),
            storage=js_api.StorageType(spec.storage),
            duplicate_window=spec.duplicate_window_s,
            max_msgs_per_subject=spec.max_msgs_per_subject,
            allow_direct=True,
            deny_delete=spec.deny_delete,
            deny_purge=spec.deny_purge,
            allow_atomic=spec.allow_atomic or None,
            num_replicas=replicas,
        )

    return await find_or_make(lambda: js.stream_info(spec.name), make, missing=js_errors.NotFoundError)


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, *, replicas: int = 1) -> None:
    """Create the stream if missing, with ``replicas`` copies; refuse (``StreamMismatch``) one
    configured otherwise: another storage, retention, window or subjects, another number of
    replicas, or limits (``UNLIMITED``) that would drop records."""
    info = await _find_or_make(js, spec, replicas=replicas)
    cfg = info.config
    if (spec.deny_delete and not cfg.deny_delete) or (spec.deny_purge and not cfg.deny_purge):
        # a stream made before these protections existed: add them (the server allows that)
        cfg.deny_delete = bool(cfg.deny_delete) or spec.deny_delete
        cfg.deny_purge = bool(cfg.deny_purge) or spec.deny_purge
        info = await js.update_stream(cfg)
        cfg = info.config
    if spec.allow_atomic and not cfg.allow_atomic:
        # a stream made before its appends were stored as atomic batches: allow them (the server
        # allows that, nats-server >= 2.12; an older one ignores the field and the check below refuses)
        cfg.allow_atomic = True
        try:
            info = await js.update_stream(cfg)
        except js_errors.APIError as exc:
            raise StreamMismatch(
                f"stream {spec.name} does not allow atomic batches and the server refused to allow them "
                f"({exc.description or exc}); {_ATOMIC_FIX}"
            ) from None
        cfg = info.config
    found = _spec(cfg)
    checked = (
        "storage",
        "retention",
        "duplicate_window_s",
        "subjects",
        "deny_delete",
        "deny_purge",
        "max_msgs_per_subject",
        "allow_atomic",
    )
    diff: dict[str, tuple[object, object]] = {
        k: (getattr(found, k), getattr(spec, k)) for k in checked if getattr(found, k) != getattr(spec, k)
    }
    limits = {"max_msgs": cfg.max_msgs, "max_bytes": cfg.max_bytes, "max_age": float(cfg.max_age or 0)}
    diff |= {k: (limits[k], v) for k, v in UNLIMITED.items() if limits[k] not in (v, None)}
    if diff:
        detail = ", ".join(f"{k} is {v[0]!r}, expected {v[1]!r}" for k, v in diff.items())
        fix = "fix or remove the stream, or point Corral at another NATS server"
        if "allow_atomic" in diff and spec.allow_atomic:
            fix = f"{_ATOMIC_FIX}, or {fix}"
        raise StreamMismatch(f"stream {spec.name} exists with a different configuration ({detail}); {fix}")
    found_replicas = int(cfg.num_replicas or 1)
    if found_replicas != replicas:
        raise StreamMismatch(
            f"stream {spec.name} exists with a different configuration (replicas is {found_replicas}, "
            f"expected {replicas}); " + _replicas_fix("stream", spec.name, found_replicas, replicas)
        )


async def stream_spec(js: JetStreamContext, stream: str) -> StreamSpec:
    """The stream's configuration as the server holds it."""
    return _spec((await honouring_cancel(js.stream_info(stream))).config)


async def stream_last_seq(js: JetStreamContext, stream: str) -> int:
    """The sequence of the last message on the whole stream; 0 when it holds none."""
    info = await honouring_cancel(js.stream_info(stream))
    return int(info.state.last_seq or 0)


async def delete_message(js: JetStreamContext, stream: str, seq: int) -> None:
    try:
        await js.delete_msg(stream, seq)
    except js_errors.APIError as exc:
        raise Refused(f"deleting message {seq} of {stream}: {exc.description or exc}") from exc


async def purge_stream(js: JetStreamContext, stream: str) -> None:
    try:
        await js.purge_stream(stream)
    except js_errors.APIError as exc:
        raise Refused(f"purging {stream}: {exc.description or exc}") from exc


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    """Create the durable consumer if missing; refuse (``StreamMismatch``) one configured otherwise."""
    wanted = js_api.ConsumerConfig(
        name=spec.name,
        durable_name=spec.name,
        filter_subject=spec.filter_subject,
        headers_only=spec.headers_only,
        ack_policy=js_api.AckPolicy(spec.ack_policy),
        deliver_policy=js_api.DeliverPolicy(spec.deliver_policy),
        ack_wait=spec.ack_wait_s,
        max_ack_pending=spec.max_ack_pending,
    )

    async def find_or_add() -> js_api.ConsumerConfig:
        try:
            info = await js.consumer_info(spec.stream, spec.name)
        except js_errors.NotFoundError:
            try:
                info = await js.add_consumer(spec.stream, wanted)
            except js_errors.BadRequestError:  # created concurrently by a sibling
                info = await js.consumer_info(spec.stream, spec.name)
        config: js_api.ConsumerConfig = info.config
        return config

    cfg = await patiently(find_or_add)
    found = {
        "filter_subject": cfg.filter_subject,
        "headers_only": bool(cfg.headers_only),
        "ack_policy": _enum_value(cfg.ack_policy),
        "deliver_policy": _enum_value(cfg.deliver_policy),
        "ack_wait_s": float(cfg.ack_wait or 0),
        "max_ack_pending": cfg.max_ack_pending,
    }
    expected = {
        "filter_subject": spec.filter_subject,
        "headers_only": spec.headers_only,
        "ack_policy": spec.ack_policy,
        "deliver_policy": spec.deliver_policy,
        "ack_wait_s": spec.ack_wait_s,
        "max_ack_pending": spec.max_ack_pending,
    }
    diff = {k: (found[k], expected[k]) for k in expected if found[k] != expected[k]}
    if diff:
        detail = ", ".join(f"{k} is {v[0]!r}, expected {v[1]!r}" for k, v in diff.items())
        raise StreamMismatch(
            f"consumer {spec.name} of stream {spec.stream} exists with a different configuration ({detail}); "
            f"delete the consumer (nats consumer rm {spec.stream} {spec.name}) and start the service again"
        )


async def consumer_exists(js: JetStreamContext, spec: ConsumerSpec) -> bool:
    try:
        await patiently(lambda: js.consumer_info(spec.stream, spec.name))
    except js_errors.NotFoundError:
        return False
    return True


async def pull_durable(
    js: JetStreamContext, stream: str, name: str, *, filter_subject: str, ack_wait_s: float, max_deliver: int
) -> JetStreamContext.PullSubscription:
    """Bind to (creating it when missing) the durable pull consumer ``name`` on ``filter_subject``:
    explicit acks, every message from the first. Asked again while JetStream does not answer (a
    service starting while the cluster elects a leader); the lookup and the creation are idempotent."""
    config = js_api.ConsumerConfig(
        durable_name=name,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
        filter_subject=filter_subject,
        deliver_policy=js_api.DeliverPolicy.ALL,
    )
    return await patiently(lambda: js.pull_subscribe(filter_subject, durable=name, stream=stream, config=config))
