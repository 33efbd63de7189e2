"""A service starting while the cluster elects a leader (a node just killed, or restarted), or beside
siblings making the same things: the JetStream lookups of its start-up (binding its durable consumer,
looking a consumer up, creating one its stream's owner keeps, opening the snapshots' object store)
are asked again while unanswered or not shown yet, instead of failing the start."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from nats import errors as nats_errors
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from corral.bus import objects, streams
from corral.contracts.subjects import ConsumerSpec, ObjectBucketSpec


class Unanswered:
    """Answers each call with the next of ``answers``: an exception is raised, anything else returned."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    def _next(self, call: str) -> Any:
        self.calls.append(call)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def pull_subscribe(self, *_args: object, **_kwargs: object) -> object:
        return self._next("pull_subscribe")

    async def consumer_info(self, *_args: object) -> object:
        return self._next("consumer_info")

    async def add_consumer(self, *_args: object) -> object:
        return self._next("add_consumer")


def _js(fake: Unanswered) -> JetStreamContext:
    return cast(JetStreamContext, fake)


SPEC = ConsumerSpec(
    stream="S",
    name="c",
    filter_subject="s.>",
    headers_only=False,
    ack_policy="explicit",
    deliver_policy="all",
    ack_wait_s=30.0,
    max_ack_pending=100,
)


async def test_binding_a_durable_consumer_is_asked_again_while_unanswered() -> None:
    fake = Unanswered(nats_errors.TimeoutError(), nats_errors.TimeoutError(), "subscription")
    got = await streams.pull_durable(_js(fake), "S", "c", filter_subject="s.>", ack_wait_s=30, max_deliver=-1)
    assert got == "subscription"
    assert fake.calls == ["pull_subscribe"] * 3


async def test_a_consumer_looked_up_while_unanswered_is_found_missing_once_answered() -> None:
    fake = Unanswered(nats_errors.TimeoutError(), js_errors.NotFoundError())
    assert await streams.consumer_exists(_js(fake), SPEC) is False
    assert fake.calls == ["consumer_info", "consumer_info"]


async def test_an_owner_creating_its_consumer_while_unanswered_looks_again_and_creates_it_once() -> None:
    made = js_api.ConsumerInfo(
        stream_name="S",
        name="c",
        created=0.0,
        config=js_api.ConsumerConfig(
            durable_name="c",
            filter_subject="s.>",
            headers_only=False,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=SPEC.ack_wait_s,
            max_ack_pending=SPEC.max_ack_pending,
        ),
    )
    fake = Unanswered(nats_errors.TimeoutError(), js_errors.NotFoundError(), made)
    await streams.ensure_consumer(_js(fake), SPEC)
    assert fake.calls == ["consumer_info", "consumer_info", "add_consumer"]


class _Store:
    async def status(self) -> object:
        config = js_api.StreamConfig(name="OBJ_snapshots", num_replicas=3)
        return SimpleNamespace(stream_info=SimpleNamespace(config=config))


class ObjectStores(Unanswered):
    async def object_store(self, *_args: object) -> object:
        return self._next("object_store")

    async def create_object_store(self, *_args: object, **_kwargs: object) -> object:
        return self._next("create_object_store")


async def test_an_object_store_just_made_is_looked_for_again_until_the_cluster_shows_it() -> None:
    # CI, a harness starting beside two others on a three-node cluster: the store made, the next
    # lookup on its server answered "stream not found", and the harness exited.
    store = _Store()
    fake = ObjectStores(js_errors.BucketNotFoundError(), "made", js_errors.BucketNotFoundError(), None, store)
    fake.answers[3] = js_errors.BadRequestError()  # a sibling made it too: its second make is refused
    spec = ObjectBucketSpec(name="snapshots", description="d", ttl_s=60.0, storage="file")

    assert await objects.open_store(_js(fake), spec, replicas=3) is store
    assert fake.calls == ["object_store", "create_object_store", "object_store", "create_object_store", "object_store"]
