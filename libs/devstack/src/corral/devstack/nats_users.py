"""NATS users: one per service, each allowed to publish and subscribe only where that service works.

``make up`` generates a random password per user once, into ``.corral/nats-users.json`` (0600),
writes them into the server's config (``.corral/nats.conf``, 0600) and gives each service its own
through ``CORRAL_NATS_USER`` / ``CORRAL_NATS_PASSWORD``. A client without credentials is refused;
a service's user is refused (``Permissions Violation``) anything outside its lists below.

The lists are derived from what each service does on the bus (``corral.contracts.subjects`` and
the services' use of ``corral.bus``). JetStream operations are requests on ``$JS.API.<op>.<stream>``
subjects, so "may read stream S" is a set of API subjects scoped to S; deliveries and replies
arrive on the user's own inbox, ``_INBOX.<user>.>`` (``corral.bus`` sets that prefix), so no
service sees another's replies. Responders answer with ``allow_responses``, which lets them
publish to the reply subject of a request they received and nowhere else.

No service user may delete a stream, delete a message or purge one of the durable streams, with one
exception: the session-store purges a deleted session's log (keeping its tombstone), so it alone may
purge ``CORRAL_SESSIONS``. Every service may purge its spent bodies from ``corral_bodies``, the
object store that carries requests and replies larger than one message (transient, with a TTL),
and the harness replaces (purges) its snapshots in ``corral_harness_snapshots``.
The ``admin`` user (the launcher's checks, tests and benchmarks) has no limits.

The users live in two NATS accounts (``accounts``). ``CORRAL`` holds ``admin`` and the services,
and Corral's streams. ``SUBSCRIBERS`` holds the ``subscriber`` user, for an operator's own programs
that follow the session log and the catalog (``examples/bus_subscriber``), and a mirror of each of
those two streams under the same name (same messages, same stream sequences), which the
session-store makes and purges of deleted sessions through ``$JS.SUBSCRIBERS.API``
(``corral.devstack.nats_accounts``).
An account is a subject space of its own: a subscriber's consumers, requests and deliveries stay in
``SUBSCRIBERS``, where the only ways into ``CORRAL`` are the few subjects the mirrors need, and the
``subscriber`` user may publish to none of them. It reads the mirrors through durable pull consumers
it creates and names itself, and nothing else: see ``nats_accounts.subscriber_permissions``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from corral.contracts import subjects, subscribers
from corral.contracts.credentials import CredentialOps
from corral.contracts.egress import EGRESS_BUCKET, EgressOps, egress_host_rpc, egress_rpc
from corral.contracts.mcp import mcp_rpc
from corral.contracts.rpc import Op
from corral.contracts.sandbox import (
    SANDBOX_HOSTS_BUCKET,
    SANDBOX_PLACEMENTS_BUCKET,
    SANDBOXES_BUCKET,
    TOOL_OUTPUTS_BUCKET,
    TOOL_RESULTS_BUCKET,
    execute_heartbeat,
    sandbox_host_rpc,
    sandbox_rpc,
)
from corral.contracts.web import web_rpc
from corral.devstack.state import write_private

ADMIN = "admin"

SUBSCRIBER = "subscriber"
"""The read-only user for an operator's own subscribers (not a service: ``make up`` writes its
credentials to ``<state>/nats-subscriber.env``)."""

#: The durable streams: no service may purge them (but the session-store, its deleted sessions' logs).
LOG_STREAMS: tuple[str, ...] = (subjects.SESSIONS_STREAM, subjects.CATALOG_STREAM, subjects.WAKE_STREAM)

#: What every service user is denied, whatever its allow list says.
DENIED_TO_SERVICES: tuple[str, ...] = (
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    *(f"$JS.API.STREAM.PURGE.{stream}" for stream in LOG_STREAMS),
    "$JS.API.ACCOUNT.>",
    "$JS.API.SERVER.>",
    "$JS.API.META.>",
)


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = field(default=DENIED_TO_SERVICES)
    responds: bool = True

    def config(self) -> dict[str, object]:
        permissions: dict[str, object] = {
            "publish": {"allow": list(self.publish), "deny": list(self.deny_publish)},
            "subscribe": {"allow": list(self.subscribe)},
        }
        if self.responds:
            permissions["allow_responses"] = True
        return permissions


def inbox(user: str) -> str:
    """The user's own reply subjects (``corral.bus.connecting.inbox_prefix`` plus ``.>``)."""
    return f"_INBOX.{user}.>"


def stream_admin(stream: str) -> tuple[str, ...]:
    """Look at, create and update ``stream`` (what ``Bus.ensure_stream`` and ``Bus.ensure_key_value`` do)."""
    return (
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.CREATE.{stream}",
        f"$JS.API.STREAM.UPDATE.{stream}",
    )


def stream_read(stream: str) -> tuple[str, ...]:
    """Read ``stream``: get messages, ordered and durable consumers, their acks and flow control."""
    return (
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    )


def consumer_read(spec: subjects.ConsumerSpec) -> tuple[str, ...]:
    """Fetch from and acknowledge on the durable consumer ``spec`` that its stream's owner created,
    and nothing else of that stream: creating (or changing) a consumer, which would read the stream
    in full, is not among these."""
    return (
        f"$JS.API.CONSUMER.INFO.{spec.stream}.{spec.name}",
        f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{spec.name}",
        f"$JS.ACK.{spec.stream}.{spec.name}.>",
    )


def kv_read(bucket: str) -> tuple[str, ...]:
    """Bind to (creating if missing) and read the KV bucket ``bucket``."""
    return (*stream_admin(f"KV_{bucket}"), *stream_read(f"KV_{bucket}"))


def kv_write(bucket: str) -> tuple[str, ...]:
    """Read and write the KV bucket ``bucket`` (puts, compare-and-set, deletes are publishes)."""
    return (*kv_read(bucket), f"$KV.{bucket}.>")


def object_store(bucket: str) -> tuple[str, ...]:
    """Bind to (creating if missing), read, put and delete objects of the object store ``bucket``
    (a put that replaces an object, and a delete, purge its old chunks from the bucket's stream).
    nats-py's object get looks the stream up by subject (``$JS.API.STREAM.NAMES``: names only)."""
    stream = f"OBJ_{bucket}"
    return (
        *stream_admin(stream),
        *stream_read(stream),
        f"$O.{bucket}.>",
        f"$JS.API.STREAM.PURGE.{stream}",
        "$JS.API.STREAM.NAMES",  # reading an object looks its stream up by subject
    )


def objects_write(bucket: str) -> tuple[str, ...]:
    """Bind to (creating if missing), read and write objects of the object store ``bucket``; not
    delete or replace them (that purges their chunks)."""
    return tuple(s for s in object_store(bucket) if not s.startswith("$JS.API.STREAM.PURGE."))


def bodies() -> tuple[str, ...]:
    """The ``corral_bodies`` object store that carries requests and replies larger than one message:
    every service that asks or answers on the bus puts, reads and deletes (purges) bodies in it."""
    return object_store(subjects.BODIES_BUCKET)


def mirror_admin() -> tuple[str, ...]:
    """What the session-store asks of the subscribers' account (``MIRRORS_API``): make the mirrors,
    and purge a deleted session's history from the session log's."""
    api = subscribers.MIRRORS_API
    return (
        *(f"{api}.STREAM.{op}.{stream}" for stream in subscribers.MIRRORED_STREAMS for op in ("INFO", "CREATE")),
        f"{api}.STREAM.PURGE.{subjects.SESSIONS_STREAM}",
    )


def _unique(*groups: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for group in groups for s in group))


#: Session-store operations only the credential-proxy asks: they record a credential (or a vault's
#: deletion) once its secret is written to (or removed from) OpenBao, which only it can do.
CREDENTIAL_PROXY_STORE_OPS: tuple[str, ...] = (Op.CREDENTIALS_SAVE, Op.CREDENTIALS_DELETE, Op.VAULTS_DELETE)


def gateway_store_ops() -> tuple[str, ...]:
    """Every session-store operation but ``apikeys.create`` (API keys are minted by the launcher, the
    ``admin`` user, never on behalf of a request) and those only the credential-proxy asks."""
    ops = (value for name, value in vars(Op).items() if name.isupper() and isinstance(value, str))
    refused = (Op.API_KEYS_CREATE, *CREDENTIAL_PROXY_STORE_OPS)
    return tuple(subjects.store_rpc(op) for op in ops if op not in refused)


def credential_proxy_store_ops() -> tuple[str, ...]:
    """What a credential operation asks the session-store: the vault and the credential's public parts."""
    ops = (Op.VAULTS_GET, Op.CREDENTIALS_GET, Op.CREDENTIALS_LIST, *CREDENTIAL_PROXY_STORE_OPS)
    return tuple(subjects.store_rpc(op) for op in ops)


def service_permissions() -> dict[str, Permissions]:
    """Each service user's allow lists (every harness process shares the ``harness`` user)."""
    store_rpc = subjects.STORE_RPC_WILDCARD
    return {
        "gateway": Permissions(
            publish=_unique(
                gateway_store_ops(),
                [subjects.health("*")],
                # a repository's token, straight to the credential-proxy (never the session-store)
                [subjects.repositories_rpc("register"), subjects.repositories_rpc("forget")],
                stream_read(subjects.SESSIONS_STREAM),
                kv_write(subjects.IDEMPOTENCY_BUCKET),
                stream_read(subjects.CATALOG_STREAM),  # follows the API keys' records (revocations)
                [op.subject for op in CredentialOps.ALL],
                bodies(),
            ),
            subscribe=(subjects.deltas("*"), subjects.health("gateway"), inbox("gateway")),
        ),
        "session-store": Permissions(
            publish=_unique(
                [subjects.SESSIONS_WILDCARD, subjects.CATALOG_WILDCARD, subjects.WAKE_WILDCARD],
                *(stream_admin(s) for s in (subjects.SESSIONS_STREAM, subjects.CATALOG_STREAM, subjects.WAKE_STREAM)),
                stream_read(subjects.SESSIONS_STREAM),
                stream_read(subjects.CATALOG_STREAM),
                [f"$JS.API.STREAM.PURGE.{subjects.SESSIONS_STREAM}"],  # a deleted session's history
                mirror_admin(),  # the subscribers' mirrors: made, and purged of deleted sessions
                kv_read(subjects.LEASE_BUCKET),
                bodies(),
            ),
            subscribe=(store_rpc, subjects.health("session-store"), inbox("session-store")),
            deny_publish=tuple(
                s for s in DENIED_TO_SERVICES if s != f"$JS.API.STREAM.PURGE.{subjects.SESSIONS_STREAM}"
            ),
        ),
        "harness": Permissions(
            publish=_unique(
                stream_admin(subjects.WAKE_STREAM),
                stream_read(subjects.WAKE_STREAM),
                kv_write(subjects.LEASE_BUCKET),
                stream_read(subjects.SESSIONS_STREAM),  # follows each session's log while it holds the lease
                stream_read(subjects.CATALOG_STREAM),  # a session's environment, from its catalog subject
                object_store(subjects.SNAPSHOT_BUCKET),  # snapshots of each session's fold
                [subjects.deltas("*")],
                [subjects.store_rpc(Op.EVENTS_APPEND)],
                [sandbox_rpc("*"), sandbox_host_rpc("*", "*")],  # any manager, or the session's host
                kv_read(SANDBOX_HOSTS_BUCKET),  # the hosts' advertisements, to place a session
                kv_write(SANDBOX_PLACEMENTS_BUCKET),  # where each session's sandbox is
                [mcp_rpc("*")],  # MCP tool lists and calls, made by the credential-proxy
                [web_rpc("*")],  # web_fetch and web_search, run by the credential-proxy
                # the credential hosts its sandboxes could not reach (never open or close a proxy), asked of
                # any credential-proxy or of the one of the session's sandbox host
                [EgressOps.FAILURES.subject, egress_host_rpc("*", EgressOps.FAILURES.name)],
                bodies(),
            ),
            subscribe=(
                subjects.WAKE_WILDCARD,
                execute_heartbeat("*", "*"),
                subjects.health("harness"),
                inbox("harness"),
            ),
        ),
        "sandbox-manager": Permissions(
            publish=_unique(
                kv_write(TOOL_RESULTS_BUCKET),
                objects_write(TOOL_OUTPUTS_BUCKET),  # outcomes too large for a KV entry, each written once
                kv_write(SANDBOXES_BUCKET),
                kv_write(SANDBOX_HOSTS_BUCKET),  # its own advertisement
                kv_write(SANDBOX_PLACEMENTS_BUCKET),  # forgets a released session's placement
                consumer_read(subjects.SANDBOX_RELEASES_SPEC),  # the log's record headers, never a body
                [EgressOps.OPEN.subject, EgressOps.CLOSE.subject],  # the sandboxes' proxies (any credential-proxy)
                [egress_host_rpc("*", op) for op in (EgressOps.OPEN.name, EgressOps.CLOSE.name)],  # or its host's
                [execute_heartbeat("*", "*"), subjects.repositories_rpc("check")],
                [sandbox_host_rpc("*", "release")],  # a release for a session on another host
                bodies(),
            ),
            subscribe=(
                sandbox_rpc("*"),
                sandbox_host_rpc("*", "*"),
                subjects.health("sandbox-manager"),
                inbox("sandbox-manager"),
            ),
        ),
        "credential-proxy": Permissions(
            publish=_unique(
                kv_write(EGRESS_BUCKET),
                credential_proxy_store_ops(),
                consumer_read(subjects.MCP_SESSION_ENDINGS_SPEC),  # the log's record headers, never a body
                bodies(),
            ),
            subscribe=(
                egress_rpc("*"),
                egress_host_rpc("*", "*"),  # its host's own egress subjects
                mcp_rpc("*"),
                subjects.repositories_rpc("*"),
                subjects.CREDENTIALS_RPC_WILDCARD,
                web_rpc("*"),
                subjects.health("credential-proxy"),
                inbox("credential-proxy"),
            ),
        ),
    }


SERVICE_USERS: tuple[str, ...] = tuple(service_permissions())


class NatsUsers:
    """The users' passwords in ``<state>/nats-users.json`` (0600): generated once, then reused."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def passwords(self) -> dict[str, str]:
        try:
            stored = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            stored = {}
        if not isinstance(stored, dict):
            stored = {}
        wanted = (ADMIN, *SERVICE_USERS, SUBSCRIBER)
        passwords = {u: str(stored[u]) for u in wanted if isinstance(stored.get(u), str) and stored[u]}
        if len(passwords) < len(wanted):
            for user in wanted:
                passwords.setdefault(user, secrets.token_urlsafe(24))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_private(self.path, json.dumps(passwords, indent=2, sort_keys=True) + "\n")
        return passwords

    def password(self, user: str) -> str:
        return self.passwords()[user]
