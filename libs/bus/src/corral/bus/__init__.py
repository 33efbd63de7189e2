"""The only code in Corral that talks to NATS.

``Bus.connect(settings, name=...)`` gives a connected ``Bus`` (an async context manager that drains
the connection on exit). See ``corral.bus.client`` for the operations, ``corral.bus.records`` for
how records of any size are stored in parts and read back whole, and ``corral.bus.operations`` for
serving request-reply operations (every failure an error reply). ``Bus.call(OP, request)`` asks an
operation declared as an ``Operation`` descriptor in ``corral.contracts`` and returns its typed reply.

Import what this package exports, never its modules (``corral.bus.client``...), except
``corral.bus.records`` for tools and tests that write the parts format themselves: an import-linter
contract holds services and the other libraries to that, and ``Bus`` keeps its NATS connection
private (what callers need of it, such as a stream's last sequence, is a method).
"""

from corral.bus.client import Bus, Delivery, PubAck, PullConsumer, Reading
from corral.bus.errors import (
    UNANSWERED,
    BusError,
    IncompleteRecord,
    KeyChanged,
    KeyExists,
    NoResponders,
    NotAuthorized,
    PartlyStored,
    PayloadTooLarge,
    Refused,
    Reject,
    Retry,
    StreamMismatch,
    StreamUnavailable,
    UnreadableReply,
    WrongLastSequence,
    unanswered,
)
from corral.bus.health import instance_name, serve_health
from corral.bus.kv import Change, Entry, KeyValueBucket
from corral.bus.objects import ObjectBucket
from corral.bus.operations import Operations
from corral.bus.publishing import OutgoingRecord
from corral.bus.records import StoredMessage

__all__ = [
    "UNANSWERED",
    "Bus",
    "BusError",
    "Change",
    "Delivery",
    "Entry",
    "IncompleteRecord",
    "KeyChanged",
    "KeyExists",
    "KeyValueBucket",
    "NoResponders",
    "NotAuthorized",
    "ObjectBucket",
    "Operations",
    "OutgoingRecord",
    "PartlyStored",
    "PayloadTooLarge",
    "PubAck",
    "PullConsumer",
    "Reading",
    "Refused",
    "Reject",
    "Retry",
    "StoredMessage",
    "StreamMismatch",
    "StreamUnavailable",
    "UnreadableReply",
    "WrongLastSequence",
    "instance_name",
    "serve_health",
    "unanswered",
]
