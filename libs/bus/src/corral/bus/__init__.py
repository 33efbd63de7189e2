"""The only code in Corral that talks to NATS.

``Bus.connect(settings, name=...)`` gives a connected ``Bus`` (an async context manager that drains
the connection on exit). See ``corral.bus.client`` for the operations.
"""

from corral.bus.client import Bus, Delivery, PubAck, StoredMessage
from corral.bus.errors import (
    BusError,
    KeyChanged,
    KeyExists,
    NoResponders,
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

__all__ = [
    "Bus",
    "BusError",
    "Delivery",
    "KeyChanged",
    "KeyExists",
    "KeyValueBucket",
    "NoResponders",
    "ObjectBucket",
    "Operations",
    "PayloadTooLarge",
    "PubAck",
    "Reject",
    "Retry",
    "StoredMessage",
    "StreamMismatch",
    "WrongLastSequence",
    "instance_name",
    "serve_health",
]
