-- Vaults and the public parts of their credentials (never a secret: those are in OpenBao only).
CREATE TABLE IF NOT EXISTS vaults (
    vault_id text PRIMARY KEY,
    workspace_id text NOT NULL,
    created_at timestamptz NOT NULL,
    archived_at timestamptz,
    log_seq bigint NOT NULL,
    body text NOT NULL
);
CREATE INDEX IF NOT EXISTS vaults_by_workspace ON vaults (workspace_id, created_at, vault_id);

CREATE TABLE IF NOT EXISTS vault_credentials (
    credential_id text PRIMARY KEY,
    vault_id text NOT NULL,
    workspace_id text NOT NULL,
    created_at timestamptz NOT NULL,
    archived_at timestamptz,
    log_seq bigint NOT NULL,
    body text NOT NULL
);
CREATE INDEX IF NOT EXISTS vault_credentials_by_vault
    ON vault_credentials (workspace_id, vault_id, created_at, credential_id);
