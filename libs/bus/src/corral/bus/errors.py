"""Outcomes a caller of ``corral.bus`` can act on.

    BusError
    ├── NotAuthorized        NATS refused the connection's credentials: fix the settings, do not retry
    ├── StreamMismatch       a stream (or consumer) exists configured otherwise than Corral expects: refuse to start
    ├── WrongLastSequence    a fenced publish lost the race: reload, re-decide, retry (or give up)
    ├── KeyExists            KV create on a key that is held
    ├── KeyChanged           KV update/delete with a stale revision
    ├── NoResponders         nobody serves the request subject: the service is down
    ├── PayloadTooLarge      the message is larger than the server's ``max_payload``: nothing was sent
    ├── IncompleteRecord     ``Bus.get`` of a part of a record whose other parts are not all stored
    ├── Refused              the server refused a stream operation (a stream that denies deletes or purges)
    ├── StreamUnavailable    no server answered a write: the stream has no leader (a failover): retry shortly
    └── UnreadableReply      ``Bus.call`` got a reply that is not the operation's reply shape

``Bus.call`` raises an error reply as the ``corral.contracts.api.errors.ApiError`` it describes.

``unanswered(exc)`` tells whether an exception (one of these, or nats-py's own) means the bus did not
answer in time or at all (a stream without a leader, a server paused or restarting, a connection
being re-established): the outcome of what was asked is unknown, and the same request, retried in a
few seconds, normally succeeds.

Handler outcomes (raised inside a durable-consumer handler):

    Retry(delay)   -> nak with a delay, the message comes back later
    Reject         -> term, the message is never redelivered
"""

from __future__ import annotations

from typing import Final

import nats.errors
from nats.js import errors as js_errors


class BusError(Exception):
    pass


class NotAuthorized(BusError):
    pass


class StreamMismatch(BusError):
    pass


class WrongLastSequence(BusError):
    pass


class PartlyStored(WrongLastSequence):
    """Records stored one at a time were fenced out after the first ``stored`` of them were stored
    (or found stored): another writer got in between, and the subject holds that prefix."""

    def __init__(self, message: str, *, stored: int) -> None:
        super().__init__(message)
        self.stored = stored


class KeyExists(BusError):
    pass


class KeyChanged(BusError):
    pass


class NoResponders(BusError):
    pass


class PayloadTooLarge(BusError):
    """A message of ``size`` bytes does not fit the server's ``max_payload`` of ``limit`` bytes."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a message of {size} bytes is larger than the bus carries ({limit} bytes)")
        self.size = size
        self.limit = limit


class Retry(Exception):
    def __init__(self, reason: str, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Reject(Exception):
    pass


class IncompleteRecord(BusError):
    """The sequence asked for is a part of a record stored in parts, and not every part is stored."""


class Refused(BusError):
    """The server refused the operation: the stream denies it (``deny_delete``, ``deny_purge``) or
    the connection's user may not ask for it."""


class StreamUnavailable(BusError):
    """No server answered a write to ``stream``: the stream has no leader right now (a JetStream
    cluster electing a new one after a server died) or is gone. Nothing was stored; a retry in a few
    seconds normally succeeds."""

    def __init__(self, stream: str) -> None:
        super().__init__(f"no server answered for stream {stream} (it has no leader right now); retry shortly")
        self.stream = stream


class UnreadableReply(BusError):
    """The reply to ``operation`` does not validate as its reply type (``errors``: how many fields)."""

    def __init__(self, operation: str, service: str, errors: int) -> None:
        super().__init__(f"the {service} sent an unreadable reply to {operation} ({errors} validation errors)")
        self.operation = operation
        self.service = service
        self.errors = errors


UNANSWERED: Final[tuple[type[Exception], ...]] = (
    StreamUnavailable,
    NoResponders,
    nats.errors.TimeoutError,  # a request, publish ack, flush or fetch not answered in time
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,  # reconnecting, with the pending buffer full
    nats.errors.UnexpectedEOF,
    js_errors.NoStreamResponseError,  # no stream answered a publish: no leader during a failover
    js_errors.ServiceUnavailableError,  # JetStream said 503: its meta leader or a stream leader is moving
)
"""What the bus raises when it did not answer: the server is away or electing a leader."""


def unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` says the bus did not answer (``UNANSWERED``): retry the same request shortly."""
    return isinstance(exc, UNANSWERED)
