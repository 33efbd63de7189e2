"""A ``secret`` operation's request never travels through the bodies object store (a JetStream
stream), on a real nats-server: larger than one message, it is refused before anything is stored;
an ordinary operation's request of the same size is spilled (and so would be stored, briefly)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from corral.bus import Bus, Operations, PayloadTooLarge
from corral.contracts import subjects
from corral.contracts.operation import operation
from corral.settings import NatsSettings

pytestmark = pytest.mark.integration


class Carry(BaseModel):
    text: str


SECRET = operation("carry", "t.rpc.secret.carry", Carry, int, queue="t", service="test", secret=True)
PLAIN = operation("carry", "t.rpc.plain.carry", Carry, int, queue="t", service="test")


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    async with Bus.connect(NatsSettings(url=nats_url), name="secret-requests") as b:
        yield b


async def bodies_stored(bus: Bus) -> int:
    """How many messages the bodies store's stream has ever held (0: it does not exist)."""
    try:
        info = await bus._js.stream_info(f"OBJ_{subjects.BODIES_BUCKET}")  # noqa: SLF001 (the stream behind it)
    except NotFoundError:
        return 0
    return int(info.state.last_seq)


async def test_a_secret_request_larger_than_one_message_is_refused_and_never_stored(bus: Bus) -> None:
    async def length(req: Carry) -> int:
        return len(req.text)

    ops = Operations(service="test").handle(SECRET, length).handle(PLAIN, length)
    big = Carry(text="s" * (bus.max_payload + 10))
    async with ops.serve(bus):
        assert await bus.call(SECRET, Carry(text="small")) == 5
        before = await bodies_stored(bus)
        with pytest.raises(PayloadTooLarge):
            await bus.call(SECRET, big)
        assert await bodies_stored(bus) == before
        # the same request on an ordinary operation goes through the bodies store: what SECRET avoids
        assert await bus.call(PLAIN, big) == len(big.text)
        assert await bodies_stored(bus) > before
