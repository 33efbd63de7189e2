"""Names of the message headers Corral reads or writes on the bus."""

from typing import Final

MSG_ID: Final = "Nats-Msg-Id"
"""JetStream de-duplication key: a publish with a seen id inside the duplicate window is dropped."""

EXPECTED_LAST_SUBJECT_SEQUENCE: Final = "Nats-Expected-Last-Subject-Sequence"
"""JetStream fencing: the publish fails unless the subject's last sequence is this value."""

BATCH_ID: Final = "Nats-Batch-Id"
"""JetStream atomic batch publish: the id every message of one batch carries (at most 64 characters)."""

BATCH_SEQUENCE: Final = "Nats-Batch-Sequence"
"""The message's place in its atomic batch, from 1."""

BATCH_COMMIT: Final = "Nats-Batch-Commit"
"""On the last message of an atomic batch (``1``): the server stores the batch whole, or none of it,
and acknowledges this message. Only the batch's first message may carry the fencing header."""

TRACEPARENT: Final = "traceparent"
"""W3C trace context, injected by ``corral.telemetry`` on publish and extracted on receipt."""

TRACESTATE: Final = "tracestate"
"""W3C trace state, carried alongside ``traceparent``."""

RECORD_TYPE: Final = "Corral-Record-Type"
"""On every message of the session log: the record's ``type`` (``corral.session_archived``,
``user.message``, ...), so a consumer that needs only some kinds of record can read headers only and
skip the bodies (the sandbox-manager's release consumer, ``subjects.SANDBOX_RELEASES_SPEC``)."""

# --- records stored in parts (see ``corral.bus.records``) -------------------------------------------
# A record whose encoding is larger than the bus's chunk size is stored as N consecutive messages on
# its subject. Every part carries these headers; readers through ``corral.bus`` get the record whole.

RECORD_ID: Final = "Corral-Record-Id"
"""The id shared by every part of one record: the publish's ``Nats-Msg-Id`` (each part is de-duplicated
as ``<record id>:<i>``), or a fresh id when the publish had none."""

RECORD_PART: Final = "Corral-Record-Part"
"""``<i>/<n>``: this message is part ``i`` (from 1) of a record stored in ``n`` parts."""

RECORD_FIRST_SEQ: Final = "Corral-Record-First-Seq"
"""On parts 2..n: the stream sequence of part 1, so a reader that starts mid-record can fetch the rest."""

RECORD_ATOMIC: Final = "Corral-Record-Atomic"
"""On parts 2..n of a record stored in one atomic batch, instead of ``RECORD_FIRST_SEQ`` (which is not
known before the batch is stored): the batch's messages have consecutive stream sequences, so part 1
is at this part's sequence less ``i - 1``."""

RECORD_DIGEST: Final = "Corral-Record-Digest"
"""Hex SHA-256 of the whole record's bytes, on every part: a reader checks the joined parts against it."""

BODY_REF: Final = "Corral-Body-Ref"
"""On a request or reply larger than one message: the name, in the ``corral_bodies`` object store,
under which its body waits (the message itself is empty). The receiver reads and deletes it."""
