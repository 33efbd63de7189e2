"""How each catalog record (``CORRAL_CATALOG``) changes the catalog's tables: ``agents``,
``agent_versions``, ``environments``, ``vaults``, ``vault_credentials``, ``workspaces`` and
``api_keys``.

A record arrives here decoded once, where the projector read it
(``corral.contracts.log.parse_catalog_record``), and is folded with ``match ... case _:
assert_never(...)``: a record type added to ``CatalogRecord`` and not handled here is a mypy error.
Bodies are the typed objects serialised (``model_dump(mode="json")``), the same JSON the store
answers with when it reads them back.
"""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

import asyncpg

from corral.contracts.api.admin import ApiKey
from corral.contracts.clock import parse_rfc3339, rfc3339
from corral.contracts.log import (
    AgentArchived,
    AgentSaved,
    ApiKeyCreated,
    ApiKeyUpdated,
    CatalogRecord,
    CredentialDeleted,
    CredentialSaved,
    EnvironmentDeleted,
    EnvironmentSaved,
    VaultDeleted,
    VaultSaved,
    WorkspaceSaved,
    fold_api_key,
)
from corral.session_store import pgtext
from corral.session_store.db import Conn


async def apply_catalog_record(conn: Conn, record: CatalogRecord, seq: int) -> None:
    """Write what ``record`` (at catalog sequence ``seq``) changes, inside the caller's transaction."""
    match record:
        case AgentSaved():
            agent = record.agent
            body = pgtext.dump(agent.model_dump(mode="json"))
            await conn.execute(
                "INSERT INTO agent_versions (agent_id, version, workspace_id, body) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (agent_id, version) DO UPDATE SET body = EXCLUDED.body",
                agent.id, agent.version, record.workspace_id, body,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO agents (agent_id, workspace_id, version, created_at, archived_at, log_seq, body) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (agent_id) DO UPDATE SET "
                "version = EXCLUDED.version, archived_at = EXCLUDED.archived_at, log_seq = EXCLUDED.log_seq, "
                "body = EXCLUDED.body",
                agent.id, record.workspace_id, agent.version, parse_rfc3339(agent.created_at),
                _ts(agent.archived_at), seq, body,
            )  # fmt: skip
        case AgentArchived():
            agent_id, archived_at = record.agent_id, record.archived_at
            row = await conn.fetchrow("SELECT body FROM agents WHERE agent_id = $1", agent_id)
            if row is None:
                return
            await conn.execute(
                "UPDATE agents SET archived_at = $2, log_seq = $3, body = $4 WHERE agent_id = $1",
                agent_id, parse_rfc3339(archived_at), seq, _archived(row["body"], archived_at),
            )  # fmt: skip
            versions = await conn.fetch("SELECT version, body FROM agent_versions WHERE agent_id = $1", agent_id)
            await conn.executemany(
                "UPDATE agent_versions SET body = $3 WHERE agent_id = $1 AND version = $2",
                [(agent_id, v["version"], _archived(v["body"], archived_at)) for v in versions],
            )
        case EnvironmentSaved():
            env = record.environment
            await conn.execute(
                "INSERT INTO environments "
                "(environment_id, workspace_id, name, created_at, archived_at, log_seq, body) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (environment_id) DO UPDATE SET "
                "name = EXCLUDED.name, archived_at = EXCLUDED.archived_at, log_seq = EXCLUDED.log_seq, "
                "body = EXCLUDED.body",
                env.id, record.workspace_id, pgtext.key(env.name), parse_rfc3339(env.created_at),
                _ts(env.archived_at), seq, pgtext.dump(env.model_dump(mode="json")),
            )  # fmt: skip
        case EnvironmentDeleted():
            await conn.execute("DELETE FROM environments WHERE environment_id = $1", record.environment_id)
        case VaultSaved():
            vault = record.vault
            await conn.execute(
                "INSERT INTO vaults (vault_id, workspace_id, created_at, archived_at, log_seq, body) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (vault_id) DO UPDATE SET "
                "archived_at = EXCLUDED.archived_at, log_seq = EXCLUDED.log_seq, body = EXCLUDED.body",
                vault.id, record.workspace_id, parse_rfc3339(vault.created_at),
                _ts(vault.archived_at), seq, pgtext.dump(vault.model_dump(mode="json")),
            )  # fmt: skip
        case VaultDeleted():
            await conn.execute("DELETE FROM vault_credentials WHERE vault_id = $1", record.vault_id)
            await conn.execute("DELETE FROM vaults WHERE vault_id = $1", record.vault_id)
        case CredentialSaved():
            credential = record.credential
            await conn.execute(
                "INSERT INTO vault_credentials "
                "(credential_id, vault_id, workspace_id, created_at, archived_at, log_seq, body) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (credential_id) DO UPDATE SET "
                "archived_at = EXCLUDED.archived_at, log_seq = EXCLUDED.log_seq, body = EXCLUDED.body",
                credential.id, credential.vault_id, record.workspace_id, parse_rfc3339(credential.created_at),
                _ts(credential.archived_at), seq, pgtext.dump(credential.model_dump(mode="json")),
            )  # fmt: skip
        case CredentialDeleted():
            await conn.execute("DELETE FROM vault_credentials WHERE credential_id = $1", record.credential_id)
        case ApiKeyCreated():
            key = fold_api_key(None, record)
            assert key is not None
            await conn.execute(
                "INSERT INTO api_keys "
                "(key_id, workspace_id, key_sha256, name, created_at, role, status, log_seq, body) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                record.key_id, record.workspace_id, record.key_sha256, pgtext.key(record.name),
                parse_rfc3339(record.created_at), key.role, key.status, seq, pgtext.dump(key.model_dump(mode="json")),
            )  # fmt: skip
        case ApiKeyUpdated():
            row = await conn.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", record.key_id)
            if row is None:
                return
            updated = fold_api_key(api_key_of_row(row), record)
            assert updated is not None
            await conn.execute(
                "UPDATE api_keys SET name = $2, status = $3, log_seq = $4, body = $5 WHERE key_id = $1",
                record.key_id, pgtext.key(updated.name), updated.status, seq,
                pgtext.dump(updated.model_dump(mode="json")),
            )  # fmt: skip
        case WorkspaceSaved():
            workspace = record.workspace
            await conn.execute(
                "INSERT INTO workspaces (workspace_id, created_at, archived_at, log_seq, body) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_id) DO UPDATE SET "
                "archived_at = EXCLUDED.archived_at, log_seq = EXCLUDED.log_seq, body = EXCLUDED.body",
                workspace.id, parse_rfc3339(workspace.created_at), _ts(workspace.archived_at), seq,
                pgtext.dump(workspace.model_dump(mode="json")),
            )  # fmt: skip
        case _:
            assert_never(record)


def api_key_of_row(row: asyncpg.Record) -> ApiKey:
    """The public key a row holds (a row projected before keys had a body: active, ``user``)."""
    if row["body"] is not None:
        return ApiKey.model_validate(pgtext.load(row["body"]))
    return ApiKey(
        id=row["key_id"],
        name=row["name"],
        workspace_id=row["workspace_id"],
        created_at=rfc3339(row["created_at"]),
        status=row["status"],
        role=row["role"],
    )


def _archived(body: str, archived_at: str) -> str:
    """An agent body as projected (a row, not a record: kept as it is), marked archived at ``archived_at``."""
    return pgtext.dump(dict(pgtext.load(body), archived_at=archived_at))


def _ts(value: str | None) -> datetime | None:
    return parse_rfc3339(value) if value else None
