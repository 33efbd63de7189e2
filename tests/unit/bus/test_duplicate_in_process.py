"""A publish whose ``Nats-Msg-Id`` a clustered stream is still storing for another writer (two
session-stores registering the same bootstrap key at start-up) is answered ``duplicate message id is
in process`` (10158). It is asked again until the other attempt is decided, never raised as if the
record could not be stored; other refusals are raised at once."""

from __future__ import annotations

from typing import Any

import pytest
from nats.js import api as js_api
from nats.js import errors as js_errors

from corral.bus.publishing import RecordWriter


class Stream:
    """A JetStream publish that answers 10158 ``in_process`` times, then acknowledges a duplicate
    (or, not ``stored_before``, stores every message from sequence 7 on)."""

    def __init__(self, in_process: int, *, err_code: int = 10158, stored_before: bool = True) -> None:
        self.in_process = in_process
        self.err_code = err_code
        self.stored_before = stored_before
        self.publishes = 0
        self.stored = 0

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> js_api.PubAck:
        self.publishes += 1
        if self.publishes <= self.in_process:
            raise js_errors.APIError(code=409, err_code=self.err_code, description="duplicate message id is in process")
        if self.stored_before:
            return js_api.PubAck(stream="CATALOG", seq=7, duplicate=True)
        self.stored += 1
        return js_api.PubAck(stream="CATALOG", seq=6 + self.stored, duplicate=False)


def writer(stream: Stream, *, timeout: float = 5.0) -> RecordWriter:
    js: Any = stream
    return RecordWriter(js, chunk_size=1024, max_payload=4096, timeout=timeout)


async def test_a_message_id_still_being_stored_is_asked_again_and_acknowledged_as_a_duplicate() -> None:
    stream = Stream(in_process=3)
    ack = await writer(stream).publish("corral.catalog.k", b"{}", {}, msg_id="apikey:abc", fence=None)
    assert (ack.seq, ack.duplicate) == (7, True)
    assert stream.publishes == 4


async def test_a_record_in_parts_asks_its_first_part_again_and_stores_the_rest() -> None:
    stream = Stream(in_process=2, stored_before=False)
    ack = await writer(stream).publish("corral.catalog.k", b"x" * 1500, {}, msg_id="apikey:abc", fence=None)
    assert (ack.first_seq, ack.seq) == (7, 8)
    assert (stream.publishes, stream.stored) == (4, 2)


async def test_it_gives_up_after_the_publish_timeout() -> None:
    stream = Stream(in_process=10_000)
    with pytest.raises(js_errors.APIError) as raised:
        await writer(stream, timeout=0.05).publish("corral.catalog.k", b"{}", {}, msg_id="apikey:abc", fence=None)
    assert raised.value.err_code == 10158
    assert 2 <= stream.publishes < 20


async def test_other_refusals_are_raised_at_once() -> None:
    stream = Stream(in_process=1, err_code=10077)
    with pytest.raises(js_errors.APIError):
        await writer(stream).publish("corral.catalog.k", b"{}", {}, msg_id="apikey:abc", fence=None)
    assert stream.publishes == 1
