-- Workspaces as records of their own, and API keys that can be suspended, revoked, given a role and
-- a rate limit. ``body`` is the public object (JSON text, see pgtext); a key registered before this
-- migration has none and reads as an active ``user`` key.
CREATE TABLE IF NOT EXISTS workspaces (
    workspace_id text PRIMARY KEY,
    created_at timestamptz NOT NULL,
    archived_at timestamptz,
    log_seq bigint NOT NULL,
    body text NOT NULL
);
CREATE INDEX IF NOT EXISTS workspaces_by_created ON workspaces (created_at, workspace_id);

ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS role text NOT NULL DEFAULT 'user';
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'active';
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS log_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS body text;
CREATE INDEX IF NOT EXISTS api_keys_by_created ON api_keys (created_at, key_id);
