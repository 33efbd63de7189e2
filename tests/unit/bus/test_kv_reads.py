"""Reading a key: from any replica (a direct get) unless the caller needs the value last written,
then from the bucket's stream leader. The fault suite's observer reads the leader: a replica still
catching up after a full disk may answer with a value from before its fault."""

from __future__ import annotations

from typing import Any

from nats.js import api as js_api

from corral.bus.kv import KeyValueBucket


class Stream:
    def __init__(self) -> None:
        self.asked: list[bool] = []

    async def get_msg(self, stream: str, *, subject: str, direct: bool) -> js_api.RawStreamMsg:
        self.asked.append(direct)
        return js_api.RawStreamMsg(subject=subject, seq=3, data=b"v", headers={})


def bucket(stream: Stream, *, direct: bool) -> KeyValueBucket:
    js: Any = stream
    kv: Any = None
    return KeyValueBucket(kv, js, "corral_sandboxes", direct=direct)


async def test_a_bucket_that_allows_direct_gets_is_read_from_any_replica_unless_the_leader_is_asked_for() -> None:
    stream = Stream()
    reads = bucket(stream, direct=True)
    assert (await reads.get("session.s")) is not None
    assert (await reads.get("session.s", leader=True)) is not None
    assert stream.asked == [True, False]


async def test_a_bucket_without_direct_gets_is_always_read_from_the_leader() -> None:
    stream = Stream()
    await bucket(stream, direct=False).get("session.s")
    assert stream.asked == [False]
