-- Projections of the session log and the catalog. Every table here can be rebuilt from the streams.
CREATE TABLE IF NOT EXISTS projection_positions (
    stream text PRIMARY KEY,
    seq bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    key_id text PRIMARY KEY,
    workspace_id text NOT NULL,
    key_sha256 text NOT NULL UNIQUE,
    name text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS agent_versions (
    agent_id text NOT NULL,
    version integer NOT NULL,
    workspace_id text NOT NULL,
    body jsonb NOT NULL,
    PRIMARY KEY (agent_id, version)
);

CREATE TABLE IF NOT EXISTS agents (
    agent_id text PRIMARY KEY,
    workspace_id text NOT NULL,
    version integer NOT NULL,
    created_at timestamptz NOT NULL,
    archived_at timestamptz,
    log_seq bigint NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS agents_by_workspace ON agents (workspace_id, created_at, agent_id);

CREATE TABLE IF NOT EXISTS environments (
    environment_id text PRIMARY KEY,
    workspace_id text NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL,
    archived_at timestamptz,
    log_seq bigint NOT NULL,
    body jsonb NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS environments_name ON environments (workspace_id, name);
CREATE INDEX IF NOT EXISTS environments_by_workspace ON environments (workspace_id, created_at, environment_id);

CREATE TABLE IF NOT EXISTS sessions (
    session_id text PRIMARY KEY,
    workspace_id text NOT NULL,
    agent_id text NOT NULL,
    agent_version integer NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    archived_at timestamptz,
    running_since timestamptz,
    active_seconds double precision NOT NULL DEFAULT 0,
    input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    cache_read_input_tokens bigint NOT NULL DEFAULT 0,
    cache_creation_input_tokens bigint NOT NULL DEFAULT 0,
    last_seq bigint NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_workspace ON sessions (workspace_id, created_at, session_id);

CREATE TABLE IF NOT EXISTS events (
    session_id text NOT NULL,
    seq bigint NOT NULL,
    event_id text NOT NULL,
    type text NOT NULL,
    processed_at timestamptz NOT NULL,
    body jsonb NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX IF NOT EXISTS events_by_type ON events (session_id, type, seq);
