"""The only code in Corral that talks to NATS.

``Bus.connect(settings, name=...)`` gives a connected ``Bus`` (an async context manager that drains
the connection on exit). See ``corral.bus.client`` for the operations, ``corral.bus.records`` for
how records of any size are stored in parts and read back whole, and ``corral.bus.operations`` for
serving request-reply operations (every failure an error reply).
"""

from corral.bus.client import Bus, Delivery, PubAck, Reading
from corral.bus.errors import (
    BusError,
    IncompleteRecord,
    KeyChanged,
    KeyExists,
    NoResponders,
    NotAuthorized,
    PayloadTooLarge,
    Reject,
    Retry,
    StreamMismatch,
    WrongLastSequence,
)
from corral.bus.health import instance_name, serve_health
from corral.bus.kv import KeyValueBucket
from corral.bus.objects import ObjectBucket
from corral.bus.operations import Operations
from corral.bus.records import StoredMessage

__all__ = [
    "Bus",
    "BusError",
    "Delivery",
    "IncompleteRecord",
    "KeyChanged",
    "KeyExists",
    "KeyValueBucket",
    "NoResponders",
    "NotAuthorized",
    "ObjectBucket",
    "Operations",
    "PayloadTooLarge",
    "PubAck",
    "Reading",
    "Reject",
    "Retry",
    "StoredMessage",
    "StreamMismatch",
    "WrongLastSequence",
    "instance_name",
    "serve_health",
]
