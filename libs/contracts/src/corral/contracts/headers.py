"""Names of the message headers Corral reads or writes on the bus."""

from typing import Final

MSG_ID: Final = "Nats-Msg-Id"
"""JetStream de-duplication key: a publish with a seen id inside the duplicate window is dropped."""

EXPECTED_LAST_SUBJECT_SEQUENCE: Final = "Nats-Expected-Last-Subject-Sequence"
"""JetStream fencing: the publish fails unless the subject's last sequence is this value."""

TRACEPARENT: Final = "traceparent"
"""W3C trace context, injected by ``corral.telemetry`` on publish and extracted on receipt."""

TRACESTATE: Final = "tracestate"
