"""Session-store operations: the request and reply of every ``corral.rpc.store.<op>`` call.

The gateway validates HTTP bodies with the ``corral.contracts.api`` params models and forwards them
here; ``workspace_id`` scopes every lookup (``None`` only for trusted internal callers such as the
harness). A reply is ``RpcReply``: ``result`` on success, or an Anthropic ``error`` detail that the
gateway turns into the HTTP error as is.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from corral.contracts import subjects
from corral.contracts.admin_rpc import AdminCreate, AdminGet, AdminList, AdminPage, AdminUpdate, IssueApiKey
from corral.contracts.api.admin import KeyRole, RateLimit
from corral.contracts.api.errors import ErrorDetail
from corral.contracts.operation import Operation, operation


class Op:
    """Operation names; each is the last part of its request subject."""

    AUTH_RESOLVE = "auth.resolve"
    API_KEYS_CREATE = "apikeys.create"
    API_KEYS_ISSUE = "apikeys.issue"
    API_KEYS_GET = "apikeys.get"
    API_KEYS_UPDATE = "apikeys.update"
    API_KEYS_LIST = "apikeys.list"
    WORKSPACES_CREATE = "workspaces.create"
    WORKSPACES_GET = "workspaces.get"
    WORKSPACES_UPDATE = "workspaces.update"
    WORKSPACES_LIST = "workspaces.list"
    WORKSPACES_ARCHIVE = "workspaces.archive"
    AGENTS_CREATE = "agents.create"
    AGENTS_GET = "agents.get"
    AGENTS_UPDATE = "agents.update"
    AGENTS_LIST = "agents.list"
    AGENTS_ARCHIVE = "agents.archive"
    AGENTS_VERSIONS = "agents.versions"
    ENVIRONMENTS_CREATE = "environments.create"
    ENVIRONMENTS_GET = "environments.get"
    ENVIRONMENTS_UPDATE = "environments.update"
    ENVIRONMENTS_LIST = "environments.list"
    ENVIRONMENTS_ARCHIVE = "environments.archive"
    ENVIRONMENTS_DELETE = "environments.delete"
    VAULTS_CREATE = "vaults.create"
    VAULTS_GET = "vaults.get"
    VAULTS_UPDATE = "vaults.update"
    VAULTS_LIST = "vaults.list"
    VAULTS_ARCHIVE = "vaults.archive"
    VAULTS_DELETE = "vaults.delete"
    CREDENTIALS_GET = "credentials.get"
    CREDENTIALS_LIST = "credentials.list"
    CREDENTIALS_SAVE = "credentials.save"
    CREDENTIALS_DELETE = "credentials.delete"
    SESSIONS_CREATE = "sessions.create"
    SESSIONS_GET = "sessions.get"
    SESSIONS_UPDATE = "sessions.update"
    SESSIONS_LIST = "sessions.list"
    SESSIONS_ARCHIVE = "sessions.archive"
    SESSIONS_DELETE = "sessions.delete"
    SESSIONS_RESOURCE_UPDATE = "sessions.resource_update"
    SESSIONS_CONTEXT = "sessions.context"
    EVENTS_APPEND = "events.append"
    EVENTS_LIST = "events.list"


_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RpcReply(BaseModel):
    """Every reply: exactly one of ``result`` and ``error``."""

    ok: bool
    result: Any = None
    error: ErrorDetail | None = None


# --- auth ---------------------------------------------------------------------------------------------
class ResolveKey(Message):
    key_sha256: str


class ResolvedKey(Message):
    workspace_id: str
    key_id: str
    role: KeyRole = "user"
    #: The key's own rate limit; ``None``: the gateway's defaults.
    rate_limit: RateLimit | None = None


class CreateApiKey(Message):
    """Register a key by its hash (the caller generates the key and shows it once); the launcher's
    bootstrap keys. Registering a hash again returns the key it already is."""

    workspace_id: str
    key_sha256: str
    name: str = "default"
    role: KeyRole = "user"
    partial_key_hint: str | None = None


# --- objects ---------------------------------------------------------------------------------------------
class Scoped(Message):
    workspace_id: str | None


class CreateObject(Scoped):
    """``agents.create`` / ``environments.create`` / ``sessions.create``: ``params`` is the validated body."""

    params: dict[str, Any]


class GetObject(Scoped):
    id: str
    version: int | None = None


class UpdateObject(Scoped):
    """``params`` holds only the fields the client sent (absent = keep, null = clear where allowed)."""

    id: str
    params: dict[str, Any]


class ObjectAction(Scoped):
    """archive / delete."""

    id: str


class ListObjects(Scoped):
    limit: int = Field(default=20, ge=1, le=1000)
    page: str | None = None
    include_archived: bool = False
    order: Literal["asc", "desc"] | None = None
    created_at_gt: str | None = None
    created_at_gte: str | None = None
    created_at_lt: str | None = None
    created_at_lte: str | None = None
    # agents.versions
    agent_id: str | None = None
    # credentials.list: the vault whose credentials to list
    vault_id: str | None = None
    # sessions.list
    agent_version: int | None = None
    statuses: list[str] | None = None


class Page(Message):
    data: list[dict[str, Any]]
    next_page: str | None = None
    prev_page: str | None = None


class Deleted(Message):
    id: str
    type: str


class CredentialRef(Scoped):
    """One credential of one vault (``credentials.get`` / ``credentials.delete``)."""

    vault_id: str
    id: str


class SaveCredential(Scoped):
    """Record a credential's public parts (``corral.contracts.api.vaults.Credential``; never a secret).

    Sent by the credential-proxy once the secret is in OpenBao. ``create``: a new credential (its
    vault must exist, in this workspace, and not be archived); otherwise an update of one that exists.
    """

    credential: dict[str, Any]
    create: bool


# --- events ------------------------------------------------------------------------------------------------
class Lease(Message):
    """Proof that the caller holds the harness lease on the session (see ``corral.contracts.subjects``)."""

    holder: str
    token: str


class AppendEvents(Scoped):
    """Append events to a session's log.

    Clients (``origin="client"``) send ``user.*`` event params; the harness (``origin="harness"``)
    sends agent, span and status events without ``id``/``processed_at`` and must hold the lease.
    ``dedupe_keys`` (one per event) become ``Nats-Msg-Id``, so a retried append is stored once.
    ``expected_last_seq`` fences the append: it fails with a conflict unless the session's log ends
    at that stream sequence.
    """

    session_id: str
    events: list[dict[str, Any]]
    origin: Literal["client", "harness"] = "client"
    lease: Lease | None = None
    dedupe_keys: list[str] | None = None
    expected_last_seq: int | None = None


class Appended(Message):
    events: list[dict[str, Any]]
    last_seq: int


class ListEvents(Scoped):
    session_id: str
    limit: int = Field(default=1000, ge=1, le=1000)
    page: str | None = None
    order: Literal["asc", "desc"] = "asc"
    types: list[str] | None = None
    created_at_gt: str | None = None
    created_at_gte: str | None = None
    created_at_lt: str | None = None
    created_at_lte: str | None = None


class GetContext(Message):
    """The harness's read: the session and its whole log (public events with stream sequences)."""

    session_id: str


class LoggedEvent(Message):
    seq: int
    event: dict[str, Any]


class SessionContext(Message):
    session: dict[str, Any]
    workspace_id: str
    last_seq: int
    events: list[LoggedEvent]
    #: The session's environment (its ``config`` says how to build the sandbox); ``None`` when it was
    #: deleted or the catalog cannot be read right now.
    environment: dict[str, Any] | None = None


# --- wake-ups ----------------------------------------------------------------------------------------------
class Wake(Message):
    """Published to ``corral.wake.<session_id>`` when a session has input a harness should handle."""

    session_id: str
    seq: int
    reason: str


# --- the session-store's operations ---------------------------------------------------------------------
ApiObject = dict[str, Any]
"""A public API object (agent, environment, session) as its JSON."""


def _store(name: str, request: type[_Req], reply: type[_Rep], *, bounded: bool = False) -> Operation[_Req, _Rep]:
    return operation(
        name,
        subjects.store_rpc(name),
        request,
        reply,
        queue=subjects.STORE_QUEUE,
        service="session-store",
        bounded=bounded,
    )


class StoreOps:
    """Every ``corral.rpc.store.<op>`` operation (queue group ``session-store``)."""

    AUTH_RESOLVE: Final = _store(Op.AUTH_RESOLVE, ResolveKey, ResolvedKey)
    API_KEYS_CREATE: Final = _store(Op.API_KEYS_CREATE, CreateApiKey, ResolvedKey)
    API_KEYS_ISSUE: Final = _store(Op.API_KEYS_ISSUE, IssueApiKey, ApiObject)
    API_KEYS_GET: Final = _store(Op.API_KEYS_GET, AdminGet, ApiObject)
    API_KEYS_UPDATE: Final = _store(Op.API_KEYS_UPDATE, AdminUpdate, ApiObject)
    API_KEYS_LIST: Final = _store(Op.API_KEYS_LIST, AdminList, AdminPage)
    WORKSPACES_CREATE: Final = _store(Op.WORKSPACES_CREATE, AdminCreate, ApiObject)
    WORKSPACES_GET: Final = _store(Op.WORKSPACES_GET, AdminGet, ApiObject)
    WORKSPACES_UPDATE: Final = _store(Op.WORKSPACES_UPDATE, AdminUpdate, ApiObject)
    WORKSPACES_LIST: Final = _store(Op.WORKSPACES_LIST, AdminList, AdminPage)
    WORKSPACES_ARCHIVE: Final = _store(Op.WORKSPACES_ARCHIVE, AdminGet, ApiObject)
    AGENTS_CREATE: Final = _store(Op.AGENTS_CREATE, CreateObject, ApiObject)
    AGENTS_GET: Final = _store(Op.AGENTS_GET, GetObject, ApiObject)
    AGENTS_UPDATE: Final = _store(Op.AGENTS_UPDATE, UpdateObject, ApiObject)
    AGENTS_LIST: Final = _store(Op.AGENTS_LIST, ListObjects, Page)
    AGENTS_ARCHIVE: Final = _store(Op.AGENTS_ARCHIVE, ObjectAction, ApiObject)
    AGENTS_VERSIONS: Final = _store(Op.AGENTS_VERSIONS, ListObjects, Page)
    ENVIRONMENTS_CREATE: Final = _store(Op.ENVIRONMENTS_CREATE, CreateObject, ApiObject)
    ENVIRONMENTS_GET: Final = _store(Op.ENVIRONMENTS_GET, GetObject, ApiObject)
    ENVIRONMENTS_UPDATE: Final = _store(Op.ENVIRONMENTS_UPDATE, UpdateObject, ApiObject)
    ENVIRONMENTS_LIST: Final = _store(Op.ENVIRONMENTS_LIST, ListObjects, Page)
    ENVIRONMENTS_ARCHIVE: Final = _store(Op.ENVIRONMENTS_ARCHIVE, ObjectAction, ApiObject)
    ENVIRONMENTS_DELETE: Final = _store(Op.ENVIRONMENTS_DELETE, ObjectAction, Deleted)
    VAULTS_CREATE: Final = _store(Op.VAULTS_CREATE, CreateObject, ApiObject)
    VAULTS_GET: Final = _store(Op.VAULTS_GET, GetObject, ApiObject)
    VAULTS_UPDATE: Final = _store(Op.VAULTS_UPDATE, UpdateObject, ApiObject)
    VAULTS_LIST: Final = _store(Op.VAULTS_LIST, ListObjects, Page)
    VAULTS_ARCHIVE: Final = _store(Op.VAULTS_ARCHIVE, ObjectAction, ApiObject)
    #: Records the deletion of a vault and its credentials; asked by the credential-proxy once their
    #: secrets are gone from OpenBao (the gateway's ``DELETE /v1/vaults/{id}`` goes there).
    VAULTS_DELETE: Final = _store(Op.VAULTS_DELETE, ObjectAction, Deleted)
    CREDENTIALS_GET: Final = _store(Op.CREDENTIALS_GET, CredentialRef, ApiObject)
    CREDENTIALS_LIST: Final = _store(Op.CREDENTIALS_LIST, ListObjects, Page)
    CREDENTIALS_SAVE: Final = _store(Op.CREDENTIALS_SAVE, SaveCredential, ApiObject)
    CREDENTIALS_DELETE: Final = _store(Op.CREDENTIALS_DELETE, CredentialRef, Deleted)
    SESSIONS_CREATE: Final = _store(Op.SESSIONS_CREATE, CreateObject, ApiObject)
    SESSIONS_GET: Final = _store(Op.SESSIONS_GET, GetObject, ApiObject)
    SESSIONS_UPDATE: Final = _store(Op.SESSIONS_UPDATE, UpdateObject, ApiObject)
    SESSIONS_LIST: Final = _store(Op.SESSIONS_LIST, ListObjects, Page)
    SESSIONS_ARCHIVE: Final = _store(Op.SESSIONS_ARCHIVE, ObjectAction, ApiObject)
    SESSIONS_DELETE: Final = _store(Op.SESSIONS_DELETE, ObjectAction, Deleted)
    #: A repository's token was rotated (``params: {resource_id}``): its ``updated_at`` moves; the
    #: token itself went to the credential-proxy, never here. Answers the resource.
    SESSIONS_RESOURCE_UPDATE: Final = _store(Op.SESSIONS_RESOURCE_UPDATE, UpdateObject, ApiObject)
    #: The whole log in one answer: a long session's cannot be sent, and says so.
    SESSIONS_CONTEXT: Final = _store(Op.SESSIONS_CONTEXT, GetContext, SessionContext, bounded=True)
    EVENTS_APPEND: Final = _store(Op.EVENTS_APPEND, AppendEvents, Appended)
    EVENTS_LIST: Final = _store(Op.EVENTS_LIST, ListEvents, Page)

    ALL: Final[tuple[Operation[Any, Any], ...]] = (
        AUTH_RESOLVE,
        API_KEYS_CREATE,
        API_KEYS_ISSUE,
        API_KEYS_GET,
        API_KEYS_UPDATE,
        API_KEYS_LIST,
        WORKSPACES_CREATE,
        WORKSPACES_GET,
        WORKSPACES_UPDATE,
        WORKSPACES_LIST,
        WORKSPACES_ARCHIVE,
        AGENTS_CREATE,
        AGENTS_GET,
        AGENTS_UPDATE,
        AGENTS_LIST,
        AGENTS_ARCHIVE,
        AGENTS_VERSIONS,
        ENVIRONMENTS_CREATE,
        ENVIRONMENTS_GET,
        ENVIRONMENTS_UPDATE,
        ENVIRONMENTS_LIST,
        ENVIRONMENTS_ARCHIVE,
        ENVIRONMENTS_DELETE,
        VAULTS_CREATE,
        VAULTS_GET,
        VAULTS_UPDATE,
        VAULTS_LIST,
        VAULTS_ARCHIVE,
        VAULTS_DELETE,
        CREDENTIALS_GET,
        CREDENTIALS_LIST,
        CREDENTIALS_SAVE,
        CREDENTIALS_DELETE,
        SESSIONS_CREATE,
        SESSIONS_GET,
        SESSIONS_UPDATE,
        SESSIONS_LIST,
        SESSIONS_ARCHIVE,
        SESSIONS_DELETE,
        SESSIONS_RESOURCE_UPDATE,
        SESSIONS_CONTEXT,
        EVENTS_APPEND,
        EVENTS_LIST,
    )
