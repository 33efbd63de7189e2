"""What the two durable streams hold.

The session log (``CORRAL_SESSIONS``, one subject per session) holds every public event of a session
plus three records that are not events: the session's creation snapshot, its archive mark and its
deletion mark. The catalog (``CORRAL_CATALOG``, one subject per object) holds agents (every version),
environments, vaults, the public parts of credentials (never a secret: those are in OpenBao only),
workspaces and API keys (by hash). Postgres is a projection of both; either stream alone can rebuild it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from corral.contracts.api.admin import ApiKey, KeyRole, KeyStatus, RateLimit, Workspace
from corral.contracts.api.agents import Agent
from corral.contracts.api.base import Resource
from corral.contracts.api.environments import Environment
from corral.contracts.api.events import SessionEvent
from corral.contracts.api.sessions import Session
from corral.contracts.api.vaults import Credential, Vault


class SessionCreated(Resource):
    """First record of every session subject: the session as created (status ``idle``)."""

    type: Literal["corral.session_created"] = "corral.session_created"
    workspace_id: str
    session: Session


class SessionArchived(Resource):
    type: Literal["corral.session_archived"] = "corral.session_archived"
    archived_at: str


class SessionDeleted(Resource):
    """Tombstone: the session's other records are purged from the stream once this is written."""

    type: Literal["corral.session_deleted"] = "corral.session_deleted"
    deleted_at: str


SessionRecord = Annotated[SessionEvent | SessionCreated | SessionArchived | SessionDeleted, Field(discriminator="type")]
SESSION_RECORD_ADAPTER: TypeAdapter[SessionRecord] = TypeAdapter(SessionRecord)
CONTROL_RECORD_TYPES: frozenset[str] = frozenset(
    {"corral.session_created", "corral.session_archived", "corral.session_deleted"}
)

SANDBOX_ENDING_TYPES: frozenset[str] = frozenset({"corral.session_archived", "corral.session_deleted"})
"""Records after which a session never runs a tool again: the sandbox-manager releases its sandbox
when it reads one (by the ``Corral-Record-Type`` header) on ``subjects.SANDBOX_RELEASES_SPEC``, and
the credential-proxy closes its MCP connections when it reads one on
``subjects.MCP_SESSION_ENDINGS_SPEC``."""


class AgentSaved(Resource):
    """A new agent version (create or update); the newest version is the agent."""

    type: Literal["corral.agent_saved"] = "corral.agent_saved"
    workspace_id: str
    agent: Agent


class AgentArchived(Resource):
    type: Literal["corral.agent_archived"] = "corral.agent_archived"
    workspace_id: str
    agent_id: str
    archived_at: str


class EnvironmentSaved(Resource):
    type: Literal["corral.environment_saved"] = "corral.environment_saved"
    workspace_id: str
    environment: Environment


class EnvironmentDeleted(Resource):
    type: Literal["corral.environment_deleted"] = "corral.environment_deleted"
    workspace_id: str
    environment_id: str
    deleted_at: str


class VaultSaved(Resource):
    """A vault created, updated or archived."""

    type: Literal["corral.vault_saved"] = "corral.vault_saved"
    workspace_id: str
    vault: Vault


class VaultDeleted(Resource):
    """A vault and every credential in it are gone (their secrets were removed from OpenBao first)."""

    type: Literal["corral.vault_deleted"] = "corral.vault_deleted"
    workspace_id: str
    vault_id: str
    deleted_at: str


class CredentialSaved(Resource):
    """A credential's public parts, created, updated or archived; its secret is in OpenBao only."""

    type: Literal["corral.credential_saved"] = "corral.credential_saved"
    workspace_id: str
    credential: Credential


class CredentialDeleted(Resource):
    """A credential is gone (its secret was removed from OpenBao first)."""

    type: Literal["corral.credential_deleted"] = "corral.credential_deleted"
    workspace_id: str
    vault_id: str
    credential_id: str
    deleted_at: str


class ApiKeyCreated(Resource):
    """An API key, by its SHA-256 hash only; the key itself is never stored."""

    type: Literal["corral.api_key_created"] = "corral.api_key_created"
    workspace_id: str
    key_id: str
    key_sha256: str
    name: str
    created_at: str
    role: KeyRole = "user"
    partial_key_hint: str | None = None
    rate_limit: RateLimit | None = None


class ApiKeyUpdated(Resource):
    """A key's mutable parts as they are now (renamed, suspended, revoked, its rate limit set or
    cleared). Every gateway follows these records and refuses a key that is not ``active`` at once."""

    type: Literal["corral.api_key_updated"] = "corral.api_key_updated"
    workspace_id: str
    key_id: str
    name: str
    status: KeyStatus
    rate_limit: RateLimit | None = None
    updated_at: str


ApiKeyRecord = Annotated[ApiKeyCreated | ApiKeyUpdated, Field(discriminator="type")]
"""What an API key's catalog subject (``subjects.api_key_log``) holds."""
API_KEY_RECORD_ADAPTER: TypeAdapter[ApiKeyRecord] = TypeAdapter(ApiKeyRecord)


def fold_api_key(current: ApiKey | None, record: ApiKeyCreated | ApiKeyUpdated) -> ApiKey | None:
    """The key as the API shows it after ``record``; ``None`` for an update of a key not seen created."""
    if isinstance(record, ApiKeyCreated):
        return ApiKey(
            id=record.key_id,
            name=record.name,
            workspace_id=record.workspace_id,
            created_at=record.created_at,
            partial_key_hint=record.partial_key_hint,
            role=record.role,
            rate_limit=record.rate_limit,
        )
    if current is None:
        return None
    return current.model_copy(update={"name": record.name, "status": record.status, "rate_limit": record.rate_limit})


class WorkspaceSaved(Resource):
    """A workspace created, renamed or archived (archiving one also archives its keys)."""

    type: Literal["corral.workspace_saved"] = "corral.workspace_saved"
    workspace: Workspace


CatalogRecord = Annotated[
    AgentSaved
    | AgentArchived
    | EnvironmentSaved
    | EnvironmentDeleted
    | VaultSaved
    | VaultDeleted
    | CredentialSaved
    | CredentialDeleted
    | ApiKeyCreated
    | ApiKeyUpdated
    | WorkspaceSaved,
    Field(discriminator="type"),
]
CATALOG_RECORD_ADAPTER: TypeAdapter[CatalogRecord] = TypeAdapter(CatalogRecord)


def parse_session_record(data: bytes | dict[str, Any]) -> SessionRecord:
    if isinstance(data, dict):
        return SESSION_RECORD_ADAPTER.validate_python(data)
    return SESSION_RECORD_ADAPTER.validate_json(data)


def parse_catalog_record(data: bytes | dict[str, Any]) -> CatalogRecord:
    if isinstance(data, dict):
        return CATALOG_RECORD_ADAPTER.validate_python(data)
    return CATALOG_RECORD_ADAPTER.validate_json(data)
