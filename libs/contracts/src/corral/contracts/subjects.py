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


# --- the catalog: agents, environments, vaults, workspaces, API keys ----------------------------
CATALOG_STREAM: Final = "CORRAL_CATALOG"
CATALOG_WILDCARD: Final = "corral.catalog.>"


def agent_log(agent_id: str) -> str:
    return f"corral.catalog.agents.{agent_id}"


def environment_log(environment_id: str) -> str:
    return f"corral.catalog.environments.{environment_id}"


def vault_log(vault_id: str) -> str:
    return f"corral.catalog.vaults.{vault_id}"


def credential_log(credential_id: str) -> str:
    """A credential's metadata (never its secret, which only OpenBao holds)."""
    return f"corral.catalog.credentials.{credential_id}"


def api_key_log(key_id: str) -> str:
    return f"corral.catalog.apikeys.{key_id}"


API_KEYS_WILDCARD: Final = api_key_log("*")
"""Every API key's records: what each gateway follows to refuse a revoked key at once."""


def workspace_log(workspace_id: str) -> str:
    return f"corral.catalog.workspaces.{workspace_id}"


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


# --- the sandbox-manager ---------------------------------------------------------------------------
SANDBOX_QUEUE: Final = "sandbox-manager"
SANDBOX_RPC_WILDCARD: Final = "corral.rpc.sandbox.>"
#: Outcomes of ``execute``, keyed ``<session_id>.<tool_use_id>``.
TOOL_RESULTS_BUCKET: Final = "corral_tool_results"
#: Object store of ``execute`` outcomes too large for a ``TOOL_RESULTS_BUCKET`` entry (one message),
#: each named by its key there; the entry says so.
TOOL_OUTPUTS_BUCKET: Final = "corral_tool_outputs"
#: The sandbox-manager's own records: which container serves which session.
SANDBOXES_BUCKET: Final = "corral_sandboxes"


def sandbox_rpc(op: str) -> str:
    """Request subject of a sandbox-manager operation (``execute`` -> ``corral.rpc.sandbox.execute``)."""
    return f"corral.rpc.sandbox.{op}"


def sandbox_host_rpc(host: str, op: str) -> str:
    """Request subject of an operation on one sandbox host (``corral.rpc.sandbox.host.<host>.<op>``)."""
    return f"corral.rpc.sandbox.host.{host}.{op}"


def execute_heartbeat(session_id: str, tool_use_id: str) -> str:
    """Where the manager serving an ``execute`` says it is still at it (core NATS, never stored)."""
    return f"corral.sandbox.heartbeats.{session_id}.{tool_use_id}"


# --- the credential-proxy's egress ----------------------------------------------------------------
EGRESS_QUEUE: Final = "credential-proxy"
EGRESS_RPC_WILDCARD: Final = "corral.rpc.egress.>"
#: The credential-proxy's egress grants: key ``<session_id>``, the policy its socket serves.
EGRESS_BUCKET: Final = "corral_egress"


def egress_rpc(op: str) -> str:
    """Request subject of an egress operation (``open`` -> ``corral.rpc.egress.open``)."""
    return f"corral.rpc.egress.{op}"


def egress_host_rpc(host: str, op: str) -> str:
    """Request subject of an egress operation on one machine's credential-proxy
    (``corral.rpc.egress.host.<host>.<op>``, ``<host>`` its ``CORRAL_CREDENTIAL_PROXY_HOST_ID``)."""
    return f"corral.rpc.egress.host.{host}.{op}"


# --- the credential-proxy's MCP client ------------------------------------------------------------
MCP_QUEUE: Final = "credential-proxy"
MCP_RPC_WILDCARD: Final = "corral.rpc.mcp.>"


def mcp_rpc(op: str) -> str:
    """Request subject of an MCP operation (``call`` -> ``corral.rpc.mcp.call``)."""
    return f"corral.rpc.mcp.{op}"


# --- the credential-proxy's credentials -------------------------------------------------------------
CREDENTIALS_QUEUE: Final = "credential-proxy"
CREDENTIALS_RPC_WILDCARD: Final = "corral.rpc.credentials.>"


def credentials_rpc(op: str) -> str:
    """Request subject of a credential operation (``create`` -> ``corral.rpc.credentials.create``)."""
    return f"corral.rpc.credentials.{op}"


# --- the credential-proxy's web tools ------------------------------------------------------------
WEB_QUEUE: Final = "credential-proxy"
WEB_RPC_WILDCARD: Final = "corral.rpc.web.>"


def web_rpc(op: str) -> str:
    """Request subject of a web tool operation (``fetch`` -> ``corral.rpc.web.fetch``)."""
    return f"corral.rpc.web.{op}"


# --- the credential-proxy's repositories ----------------------------------------------------------
REPOSITORIES_QUEUE: Final = "credential-proxy"
REPOSITORIES_RPC_WILDCARD: Final = "corral.rpc.repositories.>"


def repositories_rpc(op: str) -> str:
    """Request subject of a repository operation (``register`` -> ``corral.rpc.repositories.register``)."""
    return f"corral.rpc.repositories.{op}"


# --- health ----------------------------------------------------------------------------------------
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
    allow_atomic: bool = False  # takes JetStream atomic batches (nats-server >= 2.12; Bus.publish_batch)


SESSIONS_SPEC: Final = StreamSpec(
    name=SESSIONS_STREAM,
    subjects=(SESSIONS_WILDCARD,),
    retention="limits",
    storage="file",
    duplicate_window_s=120.0,
    deny_purge=False,  # session delete purges the history but the tombstone
    allow_atomic=True,  # a client's append is stored in one atomic batch
)
CATALOG_SPEC: Final = StreamSpec(
    name=CATALOG_STREAM, subjects=(CATALOG_WILDCARD,), retention="limits", storage="file", duplicate_window_s=120.0
)
WAKE_SPEC: Final = StreamSpec(
    name=WAKE_STREAM, subjects=(WAKE_WILDCARD,), retention="workqueue", storage="file", duplicate_window_s=2.0
)


class ConsumerSpec(BaseModel):
    """What a durable pull consumer must look like; ``Bus.ensure_consumer`` creates it and refuses a
    mismatch. Created by the stream's owner, so the process that reads from it needs only the
    rights to fetch from and acknowledge on that one consumer, not to read the stream at large.

    ``headers_only``: deliveries carry the message's headers and no body (the server adds ``Nats-Msg-Size``).
    ``ack_policy`` ``explicit``: each message is acknowledged on its own, and one not acknowledged within
    ``ack_wait_s`` is delivered again (``all``, where an acknowledgement covers every earlier message, would
    let a restarted reader acknowledge the messages its dead predecessor had been handed but never handled).
    ``deliver_policy`` ``new``: the consumer starts at the stream's end when it is created, then resumes where
    its last acknowledgement left it, whoever reads and however often the reader restarts.
    """

    model_config = ConfigDict(frozen=True)

    stream: str
    name: str
    filter_subject: str
    headers_only: bool
    ack_policy: str  # "all" | "explicit"
    deliver_policy: str  # "new" | "all"
    ack_wait_s: float
    max_ack_pending: int


SANDBOX_RELEASES_SPEC: Final = ConsumerSpec(
    stream=SESSIONS_STREAM,
    name="sandbox-releases",
    filter_subject=SESSIONS_WILDCARD,
    headers_only=True,
    ack_policy="explicit",
    deliver_policy="new",
    ack_wait_s=10.0,  # what a reader that died was handed comes back this soon; a release keeps it alive
    max_ack_pending=1024,
)
"""The sandbox-manager's view of the session log: the headers of every record, in order, from which
it picks the archive and delete marks (``Corral-Record-Type`` in ``log.SANDBOX_ENDING_TYPES``) and
releases those sessions' sandboxes. The session-store, which owns the log, creates it at start-up;
the sandbox-manager may only fetch from and acknowledge on it, so it never reads a record's body.
JetStream filters by subject only, and the log has one subject per session, so the filter is the
whole log; headers only keeps each delivery to a few hundred bytes whatever the record's size."""


ENDINGS_LINGER_S: Final = 0.2
"""How long a reader of ``SANDBOX_RELEASES_SPEC`` or ``MCP_SESSION_ENDINGS_SPEC`` waits after a fetch
that got some records but fewer than it asked for, before fetching again. Either consumer is handed
every record of every session and acts on a few (the endings), so under load the records of this
pause come in the next fetch's one pull, where fetching at once would cost a pull request and a
"no more messages" reply per record (four NATS messages per record instead of two). An ending
waits at most this long more; after an idle spell (an empty fetch) the next record comes at once."""


MCP_SESSION_ENDINGS_SPEC: Final = ConsumerSpec(
    stream=SESSIONS_STREAM,
    name="mcp-session-endings",
    filter_subject=SESSIONS_WILDCARD,
    headers_only=True,
    ack_policy="explicit",
    deliver_policy="new",
    ack_wait_s=10.0,
    max_ack_pending=1024,
)
"""The credential-proxy's view of the session log, like ``SANDBOX_RELEASES_SPEC``: record headers
only, from which it picks the archive and delete marks and closes those sessions' MCP connections.
Created by the session-store; the credential-proxy only fetches from and acknowledges on it."""


class KeyValueSpec(BaseModel):
    """What a key-value bucket must look like. Its ``owner`` service creates it when missing
    (``Bus.ensure_key_value``); every other user binds to it (``Bus.bind_key_value``) and creates
    nothing. Both refuse (``StreamMismatch``) a bucket configured otherwise, so a bucket's settings
    are never those of whichever service happened to start first.

    ``ttl_s``: an entry expires this long after its last write. ``history``: values kept per key.
    A TTL that comes from a setting is passed to the bucket's builder below, by owner and readers
    alike, so differing settings are refused at start rather than silently ignored.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    owner: str
    description: str
    ttl_s: float
    history: int = 1
    storage: str = "file"  # "file" | "memory"
    expiry_marks: bool = False
    """An entry that expires leaves a mark a watch sees (the server's subject delete marker, kept for
    ``max(ttl_s, 1)`` seconds): for buckets whose readers must notice an expiry as it happens."""


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


def lease_spec(ttl_s: float) -> KeyValueSpec:
    """The harness's session leases; ``ttl_s`` is ``CORRAL_HARNESS_LEASE_TTL_S``, which the
    session-store (the owner, which reads leases to report who runs a session) reads as well."""
    return KeyValueSpec(
        name=LEASE_BUCKET,
        owner="session-store",
        description="harness lease per session id",
        ttl_s=ttl_s,
        expiry_marks=True,  # a harness notices a dead holder's lease expiring as it happens (takeover)
    )


def idempotency_spec(ttl_s: float) -> KeyValueSpec:
    return KeyValueSpec(
        name=IDEMPOTENCY_BUCKET,
        owner="gateway",
        description="gateway: response per <workspace_id>.<sha256 of Idempotency-Key>",
        ttl_s=ttl_s,
    )


def tool_results_spec(ttl_s: float) -> KeyValueSpec:
    return KeyValueSpec(
        name=TOOL_RESULTS_BUCKET,
        owner="sandbox-manager",
        description="execute outcome per <session_id>.<tool_use_id>",
        ttl_s=ttl_s,
    )


def sandboxes_spec(ttl_s: float) -> KeyValueSpec:
    return KeyValueSpec(
        name=SANDBOXES_BUCKET,
        owner="sandbox-manager",
        description="sandbox-manager records: which container serves which session",
        ttl_s=ttl_s,
    )


def egress_spec(ttl_s: float) -> KeyValueSpec:
    return KeyValueSpec(
        name=EGRESS_BUCKET,
        owner="credential-proxy",
        description="credential-proxy egress grants per session id: listen address, port, policy",
        ttl_s=ttl_s,
    )
