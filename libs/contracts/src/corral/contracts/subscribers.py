"""The external subscribers' NATS account.

An operator's own subscribers (``examples/bus_subscriber``) live in a NATS account of their own,
which holds a mirror of each of these streams under the same name: the same messages with the
same stream sequences, read through consumers that live in that account. Nothing a subscriber
does there reaches Corral's account. The accounts exchange exactly these subjects.
"""

from __future__ import annotations

from typing import Final

from corral.contracts.subjects import CATALOG_STREAM, SESSIONS_STREAM

#: The streams mirrored into the subscribers' account.
MIRRORED_STREAMS: Final = (SESSIONS_STREAM, CATALOG_STREAM)

#: In the subscribers' account: Corral's account's ``$JS.API.CONSUMER.CREATE.<stream>`` for each
#: mirrored stream (service import; a mirror's server-made consumer is created through it).
ORIGIN_API: Final = "$JS.CORRAL.API"

#: In Corral's account: the subscribers' account's JetStream API (service import), through which
#: the session-store makes the mirrors and purges a deleted session's history from them.
MIRRORS_API: Final = "$JS.SUBSCRIBERS.API"


def mirror_delivery(stream: str) -> str:
    """The prefix of the subjects a mirror's consumer delivers on, in Corral's account (exported
    to the subscribers' account as a stream, with ``$JS.FC.<stream>.>`` for its flow control)."""
    return f"$CORRAL.MIRROR.{stream}"
