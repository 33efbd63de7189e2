-- Bodies are stored as JSON text, not jsonb: jsonb cannot hold U+0000 (a NUL in a message, a tool's
-- binary output or a name), and the store only ever reads a body whole. See corral.session_store.pgtext.
ALTER TABLE agent_versions ALTER COLUMN body TYPE text USING body::text;
ALTER TABLE agents ALTER COLUMN body TYPE text USING body::text;
ALTER TABLE environments ALTER COLUMN body TYPE text USING body::text;
ALTER TABLE sessions ALTER COLUMN body TYPE text USING body::text;
ALTER TABLE events ALTER COLUMN body TYPE text USING body::text;

-- A record the projection could not hold: skipped for its own row only, shown in health and logs.
CREATE TABLE IF NOT EXISTS projection_errors (
    stream text NOT NULL,
    seq bigint NOT NULL,
    subject text NOT NULL,
    error text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, seq)
);
