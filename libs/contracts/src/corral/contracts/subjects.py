"""Every stream, subject, consumer and bucket name on the bus, in one place.

Subjects follow NATS ADR-6: lowercase dot-separated tokens, general to specific. Ids are the last
token, so one wildcard selects all of a kind.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict

# --- the session log ------------------------------------------------------------------------------
SESSIONS_STREAM: Final = "CORRAL_SESSIONS"
SESSIONS_WILDCARD: Final = "corral.sessions.*"


def session_log(session_id: str) -> str:
    """The subject holding one session's records, in order."""
    return f"corral.sessions.{session_id}"


def session_id_of(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]


# --- the catalog: agents, environments, API keys ----------------------------------------------------
CATALOG_STREAM: Final = "CORRAL_CATALOG"
CATALOG_WILDCARD: Final = "corral.catalog.>"


def agent_log(agent_id: str) -> str:
    return f"corral.catalog.agents.{agent_id}"


def environment_log(environment_id: str) -> str:
    return f"corral.catalog.environments.{environment_id}"


def api_key_log(key_id: str) -> str:
    return f"corral.catalog.apikeys.{key_id}"


API_KEYS_WILDCARD: Final = api_key_log("*")


# --- harness wake-ups (work queue) -------------------------------------------------------------------
WAKE_STREAM: Final = "CORRAL_WAKE"
WAKE_WILDCARD: Final = "corral.wake.*"
WAKE_CONSUMER: Final = "harness"


def wake(session_id: str) -> str:
    return f"corral.wake.{session_id}"


# --- stream-only deltas (core NATS, never stored) -----------------------------------------------------
def deltas(session_id: str) -> str:
    return f"corral.deltas.{session_id}"


# --- harness leases (JetStream KV) ----------------------------------------------------------------------
LEASE_BUCKET: Final = "corral_leases"

# --- harness snapshots of a session's folded log (JetStream object store) --------------------------------
SNAPSHOT_BUCKET: Final = "corral_harness_snapshots"

# --- replayed responses per Idempotency-Key (JetStream KV, gateway) -------------------------------------
IDEMPOTENCY_BUCKET: Final = "corral_idempotency"

BODIES_BUCKET: Final = "corral_bodies"
"""Object store for request and reply bodies larger than one NATS message (see ``corral.bus``); a
body is deleted by its reader and expires after ``BODIES_TTL_S`` when it is never read."""

BODIES_TTL_S: Final = 600.0

# --- request-reply -------------------------------------------------------------------------------------
STORE_QUEUE: Final = "session-store"


def store_rpc(op: str) -> str:
    """Request subject of a session-store operation (``agents.create`` -> ``corral.rpc.store.agents.create``)."""
    return f"corral.rpc.store.{op}"


STORE_RPC_WILDCARD: Final = "corral.rpc.store.>"


def health(service: str) -> str:
    return f"corral.health.{service}"


#: The services the gateway's /health reports on, besides itself.
SERVICES: Final = ("session-store", "harness", "sandbox-manager", "credential-proxy")


class StreamSpec(BaseModel):
    """What a stream must look like; ``corral.bus`` applies it at start-up and refuses a mismatch.

    ``duplicate_window_s``: a publish carrying a ``Nats-Msg-Id`` already stored within this window is
    acknowledged as a duplicate and not stored again, so a retried append (after a lost ack or a
    restart) does not write twice. Past the window, the session log and the catalog still refuse a
    second write through the fencing header (``Nats-Expected-Last-Subject-Sequence``); the cost of a
    longer window is the server keeping every id of the window in memory.

    ``deny_delete`` / ``deny_purge``: the server refuses to delete single messages / purge the
    stream, whoever asks. The session log allows purges because deleting a session purges its
    history (keeping the tombstone); only the session-store's NATS user may ask for that.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    subjects: tuple[str, ...]
    retention: str  # "limits" | "workqueue"
    storage: str  # "file" | "memory"
    duplicate_window_s: float
    max_msgs_per_subject: int = -1
    deny_delete: bool = True
    deny_purge: bool = True


SESSIONS_SPEC: Final = StreamSpec(
    name=SESSIONS_STREAM,
    subjects=(SESSIONS_WILDCARD,),
    retention="limits",
    storage="file",
    duplicate_window_s=120.0,
    deny_purge=False,  # session delete purges the history but the tombstone
)
CATALOG_SPEC: Final = StreamSpec(
    name=CATALOG_STREAM, subjects=(CATALOG_WILDCARD,), retention="limits", storage="file", duplicate_window_s=120.0
)
WAKE_SPEC: Final = StreamSpec(
    name=WAKE_STREAM, subjects=(WAKE_WILDCARD,), retention="workqueue", storage="file", duplicate_window_s=2.0
)


class ObjectBucketSpec(BaseModel):
    """What an object store must look like; ``Bus.object_bucket`` creates it when missing."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    storage: str  # "file" | "memory"
    ttl_s: float | None = None


SNAPSHOT_SPEC: Final = ObjectBucketSpec(
    name=SNAPSHOT_BUCKET,
    description=(
        "The harness's snapshot of each session's folded log: object = session id, value = JSON "
        '{"format", "session_id", "seq", "state"}. A cache: the log is the truth, and a missing, '
        "stale-format or past-the-log snapshot is rebuilt from it."
    ),
    storage="file",
    ttl_s=7 * 24 * 3600.0,
)
